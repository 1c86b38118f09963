"""detcore-mmdet: what detcore's mmdet-family plugins (FCOS, SOLOv2) share.

Not a detcore plugin (no ``detcore`` entry point): a library the plugins depend on.

* :data:`UPSTREAM`: the pins every mmdet-family model declares (``ModelSpec.upstream``);
* :func:`compiled_ops_check`: the ``detcore doctor`` check of mmcv's compiled ops;
* :data:`CHECKPOINT_GLOBALS`: what mmengine / mmcv checkpoints pickle besides tensors, for
  ``ModelSpec.checkpoint_globals`` (:mod:`detcore_mmdet.checkpoint_compat`);
* :mod:`detcore_mmdet.adapter`: mmdet 3.x models behind detcore's ``Detector`` contract,
  mmdet's shipped configs, backbone weights and ``baseline_train_step`` (mmengine's own
  ``train_step``);
* :mod:`detcore_mmdet.build_mmcv`: builds the pinned mmcv with compiled ops (standard
  library only; ``dev/install.sh`` runs it by path before anything else is installed).

Importing this package imports neither torch nor mmdet (plugin entry points import it).
"""
from __future__ import annotations

__version__ = "0.1.0"

#: The upstream the mmdet-family plugins are written and tested against (checked by core at load).
UPSTREAM = ("mmdet==3.3.0", "mmcv==2.1.0", "mmengine==0.10.7")

BUILD_MMCV = "plugins/mmdet/detcore_mmdet/build_mmcv.py"

_COMPAT = "detcore_mmdet.checkpoint_compat"

#: numpy dtypes whose classes a checkpoint may rebuild (``checkpoint_compat.dtype_<name>``).
CHECKPOINT_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                     "uint64", "float16", "float32", "float64")

#: ``ModelSpec.checkpoint_globals`` of every mmdet-family model: the harmless objects that
#: mmengine checkpoints (mmdet 3.x ``tools/train.py``: ``message_hub`` with mmengine's
#: ``HistoryBuffer`` and numpy arrays/scalars) and mmcv 1.x checkpoints pickle, whichever
#: numpy wrote them; ``builtins.getattr`` only as a stand-in restricted to ``HistoryBuffer``'s
#: statistics methods. See :mod:`detcore_mmdet.checkpoint_compat`.
CHECKPOINT_GLOBALS = (
    f"{_COMPAT}.HistoryBuffer",
    (f"{_COMPAT}.history_buffer_method", "builtins.getattr"),
    *((f"{_COMPAT}.{name}", f"{numpy_module}.{pickled}")
      for numpy_module in ("numpy._core.multiarray", "numpy.core.multiarray")
      for name, pickled in (("reconstruct", "_reconstruct"), ("scalar", "scalar"))),
    "numpy.ndarray", "numpy.dtype",
    *(f"{_COMPAT}.dtype_{name}" for name in CHECKPOINT_DTYPES),
)


def compiled_ops_check() -> tuple[bool, str]:
    """mmcv's compiled ops: importable, and for which devices? (``detcore doctor``; never raises)"""
    try:
        from .adapter import compiled_ops

        return compiled_ops()
    except Exception as exc:  # e.g. torch or mmcv missing altogether
        return False, f"check failed: {exc} (build mmcv with {BUILD_MMCV})"

