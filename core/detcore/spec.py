"""What a plugin declares about each model it provides (no torch import)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

TaskType = Literal["bbox", "segm"]


@dataclass(frozen=True)
class ModelSpec:
    """A model a plugin provides, as returned by the ``register_models`` hook.

    name: the ``--model`` name users type (unique across installed plugins).
    task_type: ``"bbox"`` for detection, ``"segm"`` for instance segmentation.
    upstream: pip requirement strings the plugin pins, e.g. ``["effdet==0.4.1"]``;
        checked against installed distributions by ``detcore plugins``/``doctor``.
    configs: named configs; each value is a nested dict or a zero-argument
        callable returning one (so building a config can import heavy things lazily).
    default_config: the name used when ``--config`` is omitted.
    needs: extra runtime checks shown by ``detcore doctor``: name -> callable
        returning ``(ok: bool, detail: str)``; must not raise.
    checkpoint_globals: the harmless objects (classes and functions that run no code of the
        file's choosing) the upstream's checkpoint files hold besides tensors, allowed when
        ``--weights`` loads them with ``weights_only=True``: a dotted name (e.g. mmengine's
        ``"mmengine.logging.history_buffer.HistoryBuffer"``), or ``("dotted.object",
        "name.in.the.pickle")`` to allow an object under the name a file uses for it, as
        ``torch.serialization.safe_globals`` takes ``(object, name)`` pairs.
    config_keys: the model's own config keys, dotted name -> ``detcore.config_schema.Key``
        (``{"model.width": integer("FPN channels", ge=32)}``), checked for type and range with
        core's keys when a run starts; ``model.*`` keys not declared are only checked as
        ``--set`` checks every key (it must exist; a number stays a number).
    """

    name: str
    task_type: TaskType = "bbox"
    upstream: tuple[str, ...] = ()
    configs: dict[str, Any] = field(default_factory=dict)
    default_config: str = "smoke"
    description: str = ""
    needs: dict[str, Callable[[], tuple[bool, str]]] = field(default_factory=dict)
    checkpoint_globals: tuple[str | tuple[str, str], ...] = ()
    config_keys: dict[str, Any] = field(default_factory=dict)
    plugin: str = ""  # filled in by the registry: the entry-point name that declared it
