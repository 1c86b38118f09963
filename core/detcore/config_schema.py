"""What every config key may hold: core's keys (with their defaults) and the keys a plugin declares.

One :class:`Key` per dotted key says its default, the values that make sense (type and range),
its unit and a one-line meaning. :data:`CORE_KEYS` is the single source of core's keys:
``detcore.config.CORE_DEFAULTS`` is built from it, :func:`validate` checks a resolved config
against it when a run starts (so a value that would make the run meaningless is a one-line
error naming the key and the accepted range, not a run that quietly does nothing), and
``docs/config.md`` is generated from it (``python -m detcore.config_schema > docs/config.md``).

A plugin declares its own keys (``model.*``, or a new key in a core section) the same way, in
``ModelSpec.config_keys``; keys it does not declare are not checked beyond what ``--set`` does.
Pure Python, no torch: plugins import it when they register their models.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable

from .context import CHOICES
from .errors import PluginError, UserError

#: ``scheduler.name``: the schedules core's default scheduler builds.
SCHEDULERS = ("cosine", "step", "constant")
#: ``eval.backend``: the COCO evaluators core can run (identical metrics).
EVAL_BACKENDS = ("pycocotools", "faster_coco_eval")
#: The top-level sections of a config, in the order users see them.
SECTIONS = ("model", "data", "train", "optimizer", "scheduler", "eval", "predict", "export")

_MISSING = object()


def _show(value) -> str:
    """A value as the user would type it: ``0``, ``"fp32"``, ``[0.9, 0.5]``, ``null``."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


@dataclass(frozen=True)
class Key:
    """One config key. ``expected`` is the accepted values as the error message states them
    ("an integer >= 1"); ``accepts`` decides. Build keys with :func:`integer`, :func:`number`,
    :func:`flag`, :func:`choice`, :func:`text`, :func:`size`, :func:`integers` or
    :func:`fractions`. ``default``: a core key's value in ``CORE_DEFAULTS``; a plugin's keys
    leave it None (its named configs hold the values)."""

    meaning: str
    expected: str
    accepts: Callable[[Any], bool]
    unit: str = ""
    default: Any = None
    choices: tuple = ()  # a choice key's values


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _bounds(ge=None, gt=None, le=None, lt=None) -> tuple[str, Callable[[float], bool]]:
    """The range as words (``>= 1``, ``in [0, 1)``) and as a predicate."""
    low = gt if gt is not None else ge
    high = lt if lt is not None else le

    def inside(v) -> bool:
        return ((low is None or (v > low if gt is not None else v >= low))
                and (high is None or (v < high if lt is not None else v <= high)))

    if low is not None and high is not None:
        opening, closing = "(" if gt is not None else "[", ")" if lt is not None else "]"
        return f" in {opening}{low}, {high}{closing}", inside
    if low is not None:
        return f" {'>' if gt is not None else '>='} {low}", inside
    if high is not None:
        return f" {'<' if lt is not None else '<='} {high}", inside
    return "", inside


def _or_null(expected: str, accepts, nullable: bool) -> tuple[str, Callable[[Any], bool]]:
    if not nullable:
        return expected, accepts
    return f"{expected} or null", lambda v: v is None or accepts(v)


def integer(meaning: str, *, default=None, unit: str = "", nullable: bool = False,
            **bounds) -> Key:
    """An int (not a bool) within ``ge``/``gt``/``le``/``lt``; ``nullable``: None too."""
    words, inside = _bounds(**bounds)
    expected, accepts = _or_null(f"an integer{words}", lambda v: _is_int(v) and inside(v), nullable)
    return Key(meaning, expected, accepts, unit, default)


def number(meaning: str, *, default=None, unit: str = "", nullable: bool = False,
           **bounds) -> Key:
    """A finite int or float within ``ge``/``gt``/``le``/``lt``; ``nullable``: None too."""
    words, inside = _bounds(**bounds)
    expected, accepts = _or_null(f"a number{words}", lambda v: _is_number(v) and inside(v),
                                 nullable)
    return Key(meaning, expected, accepts, unit, default)


def flag(meaning: str, *, default=None) -> Key:
    return Key(meaning, "true or false", lambda v: isinstance(v, bool), default=default)


def choice(meaning: str, choices, *, default=None) -> Key:
    """One of ``choices`` (compared with ``==``, bools and ints kept apart)."""
    choices = tuple(choices)
    shown = ", ".join(c if isinstance(c, str) else _show(c) for c in choices)
    return Key(meaning, f"one of {shown}",
               lambda v: any(v == c and type(v) is type(c) for c in choices), default=default,
               choices=choices)


def text(meaning: str, *, default=None, nullable: bool = False, empty: bool = False) -> Key:
    """A string (non-empty unless ``empty``); ``nullable``: None too."""
    expected, accepts = _or_null("a string" if empty else "a non-empty string",
                                 lambda v: isinstance(v, str) and (empty or bool(v.strip())),
                                 nullable)
    return Key(meaning, expected, accepts, default=default)


def size(meaning: str, *, default=None, unit: str = "px") -> Key:
    """``[height, width]``, two integers >= 1."""
    return Key(meaning, "[height, width]: two integers >= 1",
               lambda v: isinstance(v, (list, tuple)) and len(v) == 2
               and all(_is_int(x) and x >= 1 for x in v), unit, default)


def integers(meaning: str, *, default=None, unit: str = "", **bounds) -> Key:
    """A non-empty list of ints, each within ``ge``/``gt``/``le``/``lt``."""
    words, inside = _bounds(**bounds)
    return Key(meaning, f"a non-empty list of integers{', each' + words if words else ''}",
               lambda v: isinstance(v, (list, tuple)) and len(v) > 0
               and all(_is_int(x) and inside(x) for x in v), unit, default)


def fractions(meaning: str, *, default=None) -> Key:
    """A list of strictly increasing numbers, each in (0, 1) (possibly empty)."""
    def accepts(v) -> bool:
        return (isinstance(v, (list, tuple)) and all(_is_number(x) and 0 < x < 1 for x in v)
                and all(a < b for a, b in zip(v, v[1:])))

    return Key(meaning, "a list of increasing numbers, each in (0, 1)", accepts,
               "fraction of the steps after warm-up", default)


def _loss_scale_ok(value) -> bool:
    if value == "dynamic":
        return True
    try:
        return not isinstance(value, bool) and math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        return False


#: Every key core reads, by dotted name. A plugin's config is merged over their defaults, so
#: every config has them and ``--set train.epochs=3`` works for every model.
CORE_KEYS: dict[str, Key] = {
    "data.input_size": size("the canvas every image is letterboxed into", default=[256, 256]),
    "data.batch_size": integer("images per device per training step", ge=1, default=8),
    "data.workers": integer("data-loading worker processes per device (0: in the main process)",
                            ge=0, default=2),
    "data.hflip": number("probability of a horizontal flip of a training image", ge=0, le=1,
                         default=0.5),
    "data.max_images": integer("use at most this many images of each split (0: all)", ge=0,
                               default=0),
    # how images are fitted to the canvas (detcore.data.transforms.LetterboxPolicy); the
    # efficientdet and fcos READMEs give the settings that reproduce effdet's and mmdet's figures
    "data.letterbox.rounding": choice("letterbox: resized sides round()ed (core) or floor()ed "
                                      "(effdet's ResizePad)", ("round", "floor"), default="round"),
    "data.letterbox.fill": Key("letterbox: padding colour, one value or [r, g, b] (effdet: "
                               "[124, 116, 104], the ImageNet mean)",
                               "an integer in [0, 255] or [r, g, b] of such integers",
                               lambda v: (_is_int(v) and 0 <= v <= 255) or (
                                   isinstance(v, (list, tuple)) and len(v) == 3
                                   and all(_is_int(x) and 0 <= x <= 255 for x in v)),
                               default=[0, 0, 0]),
    "data.letterbox.rescale": choice("letterbox: boxes back to the image by the one letterbox "
                                     "scale (core, effdet) or per axis (mmdet's scale_factor)",
                                     ("uniform", "per_axis"), default="uniform"),
    # the dataset generated when --data is omitted (detcore.data.synthetic.SynthSpec)
    "data.synthetic.num_train": integer("synthetic set (used without --data): training images",
                                        ge=1, default=256),
    "data.synthetic.num_val": integer("synthetic set: validation images", ge=1, default=64),
    "data.synthetic.num_classes": integer("synthetic set: classes, one shape each (at most the "
                                          "generator's shape count)", ge=1, default=3),
    "data.synthetic.min_size": integer("synthetic set: smallest image side", unit="px", ge=1,
                                       default=192),
    "data.synthetic.max_size": integer("synthetic set: largest image side (>= min_size)",
                                       unit="px", ge=1, default=320),
    "data.synthetic.max_objects": integer("synthetic set: most objects in an image", ge=1,
                                          default=4),
    "data.synthetic.seed": integer("synthetic set: random seed", ge=0, le=2**32 - 1, default=0),
    "train.epochs": integer("passes over the training set", ge=1, default=12),
    "train.max_steps": integer("stop after this many steps; the schedule is sized for them "
                               "(0: no cap)", unit="steps", ge=0, default=0),
    "train.max_minutes": number("a time cap: the run stops there and says so in the log and "
                                "result.json (0: no cap)", unit="min", ge=0, default=0.0),
    "train.log_interval": integer("log the losses every this many steps", unit="steps", ge=1,
                                  default=10),
    "train.clip_grad": number("clip the gradients' global norm to this (0: off)", ge=0,
                              default=0.0),
    "train.precise_bn": integer("after training, recompute the BatchNorm statistics of the "
                                "evaluated weights over this many training images (PreciseBN; "
                                "0: keep training's running averages)", unit="images", ge=0,
                                default=0),
    "train.precise_bn_batch": integer("batch size of train.precise_bn's passes", unit="images",
                                      ge=1, default=32),
    "train.ema": number("decay of an exponential moving average of the weights, used by eval "
                        "(0: off)", ge=0, lt=1, default=0.0),
    "train.amp": choice("mixed precision (as --amp)", CHOICES["amp"], default="off"),
    "train.loss_scale": Key("fp16's loss scale: dynamic, or a fixed number (as --loss-scale)",
                            "'dynamic' or a number > 0", _loss_scale_ok, default="dynamic"),
    "train.seed": integer("random seed of the weights and the data order", ge=0, le=2**32 - 1,
                          default=0),
    "train.deterministic": flag("deterministic algorithms (bit-identical --resume)",
                                default=False),
    "train.warmup_fps_steps": integer("first steps left out of the FPS figure", unit="steps",
                                      ge=0, default=5),
    "train.checkpoint_every": integer("write a checkpoint every this many epochs (and at the "
                                      "end)", unit="epochs", ge=1, default=1),
    "train.perf_steps": integer("timed steps of --task perf (after warmup_fps_steps)",
                                unit="steps", ge=1, default=30),
    "train.eval_after": flag("evaluate on the validation split after training", default=True),
    "train.eval_every": integer("also evaluate every this many epochs during training, for the "
                                "mAP-per-epoch plot (0: only after training)", unit="epochs",
                                ge=0, default=0),
    "train.tensorboard": flag("write TensorBoard event files to WORK_DIR/tensorboard (when "
                              "tensorboard is installed)", default=True),
    "train.sync_bn": flag("SyncBatchNorm across workers (cuda/npu, world size > 1)",
                          default=False),
    "train.dist_timeout_s": number("how long workers wait for a peer before the job ends",
                                   unit="s", gt=0, default=300),
    "optimizer.name": text("adamw or sgd (core's), or a name the plugin's build_optimizer takes",
                           default="adamw"),
    "optimizer.lr": number("learning rate (for base_world_size workers)", gt=0, default=1e-3),
    "optimizer.weight_decay": number("weight decay", ge=0, default=1e-4),
    "optimizer.momentum": number("SGD momentum", ge=0, lt=1, default=0.9),
    "optimizer.scale_lr_by_world_size": flag("multiply lr by world size / base_world_size",
                                             default=True),
    "optimizer.base_world_size": integer("the world size lr is given for", ge=1, default=1),
    "scheduler.name": choice("learning-rate schedule after the warm-up", SCHEDULERS,
                             default="cosine"),
    "scheduler.warmup_steps": integer("linear warm-up length", unit="steps", ge=0, default=50),
    "scheduler.warmup_ratio": number("the first step's lr as a fraction of optimizer.lr", ge=0,
                                     le=1, default=0.001),
    "scheduler.milestones": fractions("step: where the lr is multiplied by gamma",
                                      default=[0.67, 0.9]),
    "scheduler.gamma": number("step: the lr's factor at each milestone", gt=0, default=0.1),
    "eval.batch_size": integer("images per device per evaluation batch", ge=1, default=8),
    "eval.score_threshold": number("detections scoring below this are dropped", ge=0, le=1,
                                   default=0.05),
    "eval.max_detections": integer("detections kept per image (the export's N)", ge=1,
                                   default=100),
    "eval.backend": choice("the COCO evaluator (identical metrics)", EVAL_BACKENDS,
                           default="pycocotools"),
    "eval.plots": flag("after train and eval, draw WORK_DIR/plots/*.png (when matplotlib is "
                       "installed)", default=True),
    "predict.max_images": integer("draw at most this many images (0: all)", ge=0, default=16),
    "predict.score_threshold": number("detections scoring below this are not drawn", ge=0,
                                      le=1, default=0.3),
    "export.opset": integer("ONNX opset (torch exports 7 and up)", ge=7, default=17),
    "export.om_opset": integer("ONNX opset of the file --format om converts with atc: the "
                               "reference's (CANN 6.0's atc takes 9-13; 7.0's 9-18)", ge=7,
                               default=11),
    "export.dynamic_batch": flag("a dynamic batch axis in the ONNX model", default=False),
    "export.batch_size": integer("the exported model's batch (as --batch-size)", ge=1, default=1),
    "export.soc_version": text("atc's --soc_version for --format om (null: read from npu-smi)",
                               nullable=True, default=None),
}


def nested(keys: dict[str, Key]) -> dict:
    """The defaults of ``keys`` as a nested config, every section present."""
    out: dict = {section: {} for section in SECTIONS}
    for dotted, key in keys.items():
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = key.default
    return out


def keys_for(spec) -> dict[str, Key]:
    """Core's keys and the ones ``spec``'s plugin declares (which may not redefine core's)."""
    declared = dict(getattr(spec, "config_keys", None) or {})
    clash = sorted(set(declared) & set(CORE_KEYS))
    if clash:
        raise PluginError(f"model {spec.name} (plugin {spec.plugin or '?'}) declares core config "
                          f"key {clash[0]}; declare only its own keys (model.*, or a new key of a "
                          f"core section)")
    return {**CORE_KEYS, **declared}


def lookup(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def check(dotted: str, value, key: Key, name: str | None = None) -> None:
    """Raise a one-line :class:`UserError` unless ``key`` accepts ``value``."""
    if not key.accepts(value):
        raise UserError(f"{name or 'config key ' + dotted}={_show(value)}: expected "
                        f"{key.expected}" + (f" ({key.unit})" if key.unit else ""))


def validate(config: dict, spec=None) -> None:
    """Check every core key of ``config`` and every key ``spec`` declares (a declared key the
    config does not hold is skipped: the plugin's own default applies)."""
    for dotted, key in (keys_for(spec) if spec is not None else CORE_KEYS).items():
        value = lookup(config, dotted)
        if value is _MISSING:
            if dotted in CORE_KEYS:
                raise UserError(f"config key {dotted} is missing (a config may change core's "
                                f"sections, not replace them)")
            continue
        check(dotted, value, key)


def markdown(keys: dict[str, Key] = CORE_KEYS) -> str:
    """``keys`` as a Markdown table: key, default, accepted values, unit, meaning."""
    rows = ["| key | default | accepted | unit | meaning |", "|---|---|---|---|---|"]
    for dotted, key in keys.items():
        rows.append(f"| `{dotted}` | `{_show(key.default)}` | {key.expected} | {key.unit} | "
                    f"{key.meaning} |")
    return "\n".join(rows) + "\n"


_DOC_HEAD = """# Config keys

Every key core reads, with its default and the values it accepts. A run checks every value when it
starts: a value outside its range is one line, `detcore: error: config key KEY=VALUE: expected
...` (exit 2). Change a key with `--set KEY=VALUE` or in a `--config` file (see
[writing-a-plugin.md §5](writing-a-plugin.md#5-configs)); a plugin's named configs change the
defaults, and a plugin declares its own keys (`model.*`) the same way, in `ModelSpec.config_keys`.

Generated from `detcore.config_schema.CORE_KEYS` by `python -m detcore.config_schema >
docs/config.md` (a test checks that this file matches).

"""


def document() -> str:
    """The text of ``docs/config.md``."""
    return _DOC_HEAD + markdown()


if __name__ == "__main__":
    print(document(), end="")
