"""detcore-solov2: SOLOv2 instance segmentation (mmdet 3.3) as a detcore plugin."""

__version__ = "0.1.0"
