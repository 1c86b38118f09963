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
stack), and a numpy 1.x name cannot be allow-listed with the numpy 2 object (torch keys the
allow-list by the object's own ``__module__.__qualname__``). So both are **stand-ins** here:
functions registered under the name the pickle uses, doing only the safe part:

* :func:`history_buffer_method` (pickled name ``builtins.getattr``) returns a public method
  of ``HistoryBuffer`` and refuses every other ``getattr`` with an ``UnpicklingError`` that
  names the global (core turns it into its one-line "refused" error);
* :data:`numpy_reconstruct`, :data:`numpy1_reconstruct`, :data:`numpy_scalar`,
  :data:`numpy1_scalar` (pickled names ``numpy._core.multiarray._reconstruct``,
  ``numpy.core.multiarray._reconstruct``, ``...scalar``) call the installed numpy's own
  function, whichever numpy wrote the file.
"""
from __future__ import annotations

import importlib
import inspect
import pickle

import numpy as np
from mmengine.logging.history_buffer import HistoryBuffer

from . import CHECKPOINT_DTYPES

__all__ = ["HistoryBuffer", "history_buffer_method", "numpy_reconstruct", "numpy1_reconstruct",
           "numpy_scalar", "numpy1_scalar"]


def _multiarray():
    try:  # numpy 2
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy 1
        return importlib.import_module("numpy.core.multiarray")


_MULTIARRAY = _multiarray()


def _stand_in(func, pickled_name: str, doc: str):
    """``func`` under the dotted name a pickle uses for it (torch's allow-list key)."""
    module, _, name = pickled_name.rpartition(".")

    def stand_in(*args):
        return func(*args)

    stand_in.__module__, stand_in.__qualname__, stand_in.__name__ = module, name, name
    stand_in.__doc__ = doc
    return stand_in


def _history_buffer_method(owner, name):
    if (owner is HistoryBuffer and isinstance(name, str) and not name.startswith("_")
            and inspect.isfunction(vars(HistoryBuffer).get(name))):
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f"GLOBAL builtins.getattr is allowed only for mmengine's HistoryBuffer statistics "
        f"methods, not getattr({getattr(owner, '__qualname__', type(owner).__name__)}, {name!r})")


#: ``builtins.getattr`` restricted to ``getattr(HistoryBuffer, <public method>)``.
history_buffer_method = _stand_in(
    _history_buffer_method, "builtins.getattr",
    "Stands in for builtins.getattr while unpickling: only mmengine's HistoryBuffer methods.")

numpy_reconstruct = _stand_in(_MULTIARRAY._reconstruct, "numpy._core.multiarray._reconstruct",
                              "numpy's ndarray reconstructor (a numpy 2 pickle's name).")
numpy1_reconstruct = _stand_in(_MULTIARRAY._reconstruct, "numpy.core.multiarray._reconstruct",
                               "numpy's ndarray reconstructor (a numpy 1 pickle's name).")
numpy_scalar = _stand_in(_MULTIARRAY.scalar, "numpy._core.multiarray.scalar",
                         "numpy's scalar constructor (a numpy 2 pickle's name).")
numpy1_scalar = _stand_in(_MULTIARRAY.scalar, "numpy.core.multiarray.scalar",
                          "numpy's scalar constructor (a numpy 1 pickle's name).")

# numpy's dtype classes (``numpy.dtypes.Float64DType``...: a rebuilt dtype's class, checked
# when the pickle sets its state), as attributes ``dtype_<name>`` core can resolve.
for _name in CHECKPOINT_DTYPES:
    globals()[f"dtype_{_name}"] = type(np.dtype(_name))
del _name
