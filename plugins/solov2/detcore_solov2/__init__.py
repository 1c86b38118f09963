"""detcore-solov2: SOLOv2 instance segmentation (mmdet 3.3) as a detcore plugin.

The mmdet adapter, the upstream pins and the mmcv build script are detcore-mmdet's
(:mod:`detcore_mmdet`), shared with detcore-fcos.
"""

__version__ = "0.1.0"
