"""Checkpoints: written atomically, loaded with ``weights_only=True`` (never runs pickled code)."""
from __future__ import annotations

import importlib
import os
import pickle
import tempfile
from pathlib import Path

import torch

from .errors import UserError

FORMAT = "detcore-checkpoint"


def save_checkpoint(state: dict, path: Path) -> Path:
    """Write ``state`` to ``path`` through a temporary file, fsync and rename.

    A process killed mid-write leaves the previous file intact; a full disk raises
    before the rename, so the previous checkpoint is never replaced by a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        kept = f"; the previous {path.name} is intact" if path.exists() else ""
        raise UserError(f"could not write checkpoint {path}: {exc.strerror or exc}{kept}; free "
                        f"space or pass another --work-dir") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


#: Harmless classes upstream checkpoints carry besides tensors: timm's ``CheckpointSaver`` (effdet
#: ``train.py``) stores its ``argparse`` arguments. A plugin adds its upstream's through
#: ``ModelSpec.checkpoint_globals``; anything else is refused, as ``weights_only=True`` does.
SAFE_GLOBALS = ("argparse.Namespace",)


def _resolve(entry: str | tuple[str, str]):
    """A ``checkpoint_globals`` entry -> what ``torch.serialization.safe_globals`` takes: the
    object a dotted name names, or ``(object, "name.in.the.pickle")`` for an entry
    ``("dotted.object", "name.in.the.pickle")`` (an object allowed under another name: numpy 1.x's
    module paths, or a restricted stand-in for a builtin)."""
    if isinstance(entry, tuple):
        dotted, pickled = entry
        return _resolve(dotted), pickled
    module, _, name = entry.rpartition(".")
    return getattr(importlib.import_module(module), name)


def load_checkpoint(path: Path, allowed_globals: tuple = ()) -> dict:
    """Load a checkpoint safely; every failure is a one-line :class:`UserError`.

    ``weights_only=True`` always; ``allowed_globals`` (``ModelSpec.checkpoint_globals`` entries)
    extends :data:`SAFE_GLOBALS` with what a plugin's upstream format is known to hold.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
    try:
        with torch.serialization.safe_globals([_resolve(g) for g in (*SAFE_GLOBALS, *allowed_globals)]):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        blocked = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line]
        if blocked:
            raise UserError(f"{path} was refused: loading it would import or run code "
                            f"({blocked[0]}); detcore loads checkpoints with weights_only=True; "
                            f"re-save it as a plain state_dict") from None
        raise UserError(f"{path} is truncated or not a PyTorch checkpoint (unpickling failed)") from None
    except Exception as exc:  # torch raises many types for a damaged file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} is truncated or not a PyTorch checkpoint ({first})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a checkpoint dict")
    return state


def model_state(ckpt: dict, prefer_ema: bool = True) -> dict:
    """The model weights inside a detcore, timm/effdet or plain state-dict checkpoint."""
    if ckpt.get("format") == FORMAT:
        if prefer_ema and ckpt.get("ema"):
            return ckpt["ema"]
        return ckpt["model"]
    for key in (("state_dict_ema", "state_dict") if prefer_ema else ("state_dict",)):
        if isinstance(ckpt.get(key), dict):
            return ckpt[key]
    if isinstance(ckpt.get("model"), dict):
        return ckpt["model"]
    return ckpt


def recorded_classes(ckpt: dict) -> list[str] | int | None:
    """The classes a checkpoint records: their names where it has them, else their count.

    detcore's own (``classes``, ``num_classes``), mmengine's (mmdet 3.x ``tools/train.py``:
    ``meta.dataset_meta.classes``) and mmcv 1.x's (mmdet 2.x: ``meta.CLASSES``); ``None`` for a
    plain state dict, whose class count must come from ``--data``.
    """
    if ckpt.get("format") == FORMAT:
        return list(ckpt["classes"]) if ckpt.get("classes") else ckpt.get("num_classes")
    meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
    dataset_meta = meta.get("dataset_meta") if isinstance(meta.get("dataset_meta"), dict) else {}
    names = dataset_meta.get("classes") or meta.get("CLASSES")
    if isinstance(names, str):  # mmdet 2.x single-class datasets may store a bare string
        names = [names]
    return [str(n) for n in names] if isinstance(names, (list, tuple)) and names else None


def load_model_weights(model: torch.nn.Module, ckpt: dict, source: str, *,
                       finetune: bool, expected_model: str | None = None) -> list[str]:
    """Load weights into ``model`` strictly; return the keys re-initialised (finetune only).

    Every tensor of the model must come from the checkpoint and every tensor of the checkpoint
    must have a place in the model (after the model's ``convert_state_dict``); otherwise the
    error names the counts and the first keys. A shape mismatch (another class count) is an
    error that says to use ``--task finetune``, which keeps those layers freshly initialised.
    """
    if expected_model and ckpt.get("format") == FORMAT and ckpt.get("model_name") != expected_model:
        raise UserError(f"{source} is a checkpoint of model {ckpt.get('model_name')!r}, "
                        f"not {expected_model!r}; pass weights of {expected_model}")
    state = {k.removeprefix("module."): v for k, v in model_state(ckpt).items()}
    convert = getattr(model, "convert_state_dict", None)
    state = convert(state) if callable(convert) else state
    own = model.state_dict()
    if not set(state) & set(own):
        raise UserError(f"{source} has no weights matching this model; is it a checkpoint of "
                        f"another model?")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise UserError(f"{source} does not fill this model: {len(missing)} of {len(own)} tensors "
                        f"missing{_first(missing)}, {len(unexpected)} unexpected{_first(unexpected)}; "
                        f"pass a complete checkpoint of this model")
    mismatched = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if mismatched and not finetune:
        raise UserError(f"{source} does not fit this model ({len(mismatched)} tensors differ in "
                        f"shape, e.g. {mismatched[0]}: probably another class count); use --task "
                        f"finetune to re-initialise the class layers")
    model.load_state_dict({k: own[k] if k in mismatched else state[k] for k in own}, strict=True)
    return mismatched


def _first(keys: list[str], n: int = 3) -> str:
    return f" (first: {', '.join(keys[:n])})" if keys else ""
