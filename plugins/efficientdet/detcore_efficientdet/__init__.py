"""EfficientDet for detcore (effdet 0.4.1 + timm 1.0.31).

Importing this package (and ``.plugin``, ``.configs``, ``.variants``) must not import
torch or effdet: ``detcore plugins`` imports every plugin's entry-point module.
"""

__version__ = "0.1.0"
