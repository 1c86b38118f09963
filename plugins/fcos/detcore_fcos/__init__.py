"""detcore-fcos: FCOS from mmdet 3.3.0 as a detcore plugin (entry point: ``detcore_fcos.plugin``).

Importing this package imports neither torch nor mmdet.
"""
__version__ = "0.1.0"

#: The upstream this plugin is written and tested against (checked by core at load).
UPSTREAM = ("mmdet==3.3.0", "mmcv==2.1.0", "mmengine==0.10.7")
MODEL_NAME = "fcos"
