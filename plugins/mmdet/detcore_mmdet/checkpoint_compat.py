"""The harmless objects mmengine / mmcv checkpoints pickle besides tensors, for ``weights_only``.

:data:`detcore_mmdet.CHECKPOINT_GLOBALS` (each mmdet-family ``ModelSpec.checkpoint_globals``)
names the objects of this module; core resolves them and hands them to
``torch.serialization.safe_globals`` while it loads ``--weights`` with ``weights_only=True``.
Nothing here runs on import but numpy and mmengine's ``HistoryBuffer`` imports, and only
core's checkpoint loader imports this module.

What an mmengine checkpoint (mmdet 3.x ``tools/train.py``, ``Runner``'s ``CheckpointHook``)
holds besides tensors, plain containers and ``collections.Counter`` (the ``MultiStepLR``
milestones), all allowed by torch already:

* ``message_hub``: mmengine's :class:`~mmengine.logging.HistoryBuffer` per logged scalar
  (numpy arrays of float64 values and int64 counts), whose ``statistics_methods`` dict
  pickles ``HistoryBuffer.min``/``max``/``current``/``mean`` as ``getattr(HistoryBuffer,
  "min")``, i.e. a call of ``builtins.getattr``; and numpy scalars (``eta``);
* numpy arrays and scalars pickle as ``numpy._core.multiarray._reconstruct`` /
  ``numpy._core.multiarray.scalar`` (numpy 2) or ``numpy.core.multiarray.*`` (numpy 1, the
  numpy of most mmdet 3.x and all mmdet 2.x environments), ``numpy.ndarray``,
  ``numpy.dtype`` and, when a dtype is rebuilt, its class (``numpy.dtypes.Float64DType``...).

``builtins.getattr`` is not harmless (it reaches any attribute of anything on the pickle
stack), so :func:`history_buffer_method` stands in for it (declared as ``(object,
"builtins.getattr")``): it returns a public method of ``HistoryBuffer`` and refuses every other
``getattr`` with an ``UnpicklingError`` that names the global (core turns it into its one-line
"refused" error). numpy's reconstructors are allowed under both numpy's names
(:data:`reconstruct`, :data:`scalar`: the installed numpy's own functions, whichever numpy
wrote the file).
"""
from __future__ import annotations

import importlib
import inspect
import pickle

import numpy as np
from mmengine.logging.history_buffer import HistoryBuffer

from . import CHECKPOINT_DTYPES

__all__ = ["HistoryBuffer", "history_buffer_method", "reconstruct", "scalar"]


def _multiarray():
    try:  # numpy 2
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy 1
        return importlib.import_module("numpy.core.multiarray")


_MULTIARRAY = _multiarray()

#: numpy's ndarray reconstructor and scalar constructor (pickled as
#: ``numpy._core.multiarray._reconstruct`` / ``.scalar`` by numpy 2, ``numpy.core...`` by numpy 1).
reconstruct = _MULTIARRAY._reconstruct
scalar = _MULTIARRAY.scalar


def history_buffer_method(owner, name):
    """Stands in for ``builtins.getattr`` while unpickling: only ``getattr(HistoryBuffer,
    <public method>)``, as ``HistoryBuffer`` pickles its ``statistics_methods``."""
    if (owner is HistoryBuffer and isinstance(name, str) and not name.startswith("_")
            and inspect.isfunction(vars(HistoryBuffer).get(name))):
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f"GLOBAL builtins.getattr is allowed only for mmengine's HistoryBuffer statistics "
        f"methods, not getattr({getattr(owner, '__qualname__', type(owner).__name__)}, {name!r})")


# numpy's dtype classes (``numpy.dtypes.Float64DType``...: a rebuilt dtype's class, checked
# when the pickle sets its state), as attributes ``dtype_<name>`` core can resolve.
for _name in CHECKPOINT_DTYPES:
    globals()[f"dtype_{_name}"] = type(np.dtype(_name))
del _name
