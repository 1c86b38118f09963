"""detcore-fcos: FCOS from mmdet 3.3.0 as a detcore plugin (entry point: ``detcore_fcos.plugin``).

The mmdet adapter, the upstream pins and the mmcv build script are detcore-mmdet's
(:mod:`detcore_mmdet`), shared with detcore-solov2. Importing this package imports neither
torch nor mmdet.
"""
__version__ = "0.1.0"

MODEL_NAME = "fcos"
