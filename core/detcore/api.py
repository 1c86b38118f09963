"""``detcore.Model``: the Python API, on the code path of ``detcore run``.

``train``, ``finetune``, ``eval`` and ``export`` (and :meth:`Model.run` for any task) build the
:class:`~detcore.context.RunOptions` the CLI builds and hand them to the same runner: the same
config resolution, the same ``result.json`` (returned as a dict), the same
:class:`~detcore.errors.UserError` messages (raised here, where the CLI prints them as one line).
``predict`` resolves a predict run once, loads the model once, and then calls the
:class:`~detcore.predict.Predictor` that ``--task predict`` uses on images in memory.
"""
from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np

from .context import RunOptions
from .errors import UserError
from .predict import Detections  # also detcore.Detections

#: The :class:`RunOptions` a call may pass as keywords (``device=``, ``work_dir=``, ``amp=``...);
#: the model, task, data, config, overrides and weights come from the Model and the method.
CALL_OPTIONS = tuple(f.name for f in fields(RunOptions)
                     if f.name not in ("model", "task", "data", "config", "sets", "weights"))


def _text(value) -> str | None:
    return None if value is None else str(value)


def as_sets(overrides) -> tuple[str, ...]:
    """``overrides`` as ``--set`` items: ``["train.epochs=3"]`` or ``{"train.epochs": 3}`` (values
    written as JSON, which ``--set``'s YAML parser reads back as the same number, list, bool)."""
    if isinstance(overrides, dict):
        return tuple(f"{key}={json.dumps(value)}" for key, value in overrides.items())
    if isinstance(overrides, str):
        return (overrides,)
    return tuple(overrides)


class Model:
    """One model of an installed plugin, with the weights it trains, evaluates, exports and
    predicts with.

    ``weights``: a checkpoint (``None``: what ``detcore run`` uses, i.e. none for ``train``, and
    ``work_dirs/MODEL/train/checkpoints/last.pt`` for the others). ``config``, ``data``,
    ``overrides`` and ``device`` apply to every call; a call's own ``config=``/``data=`` replace
    them for that call and its ``overrides=`` are applied after them. After :meth:`train` or
    :meth:`finetune` the Model holds the checkpoint it wrote. ``registry``: the plugins to look
    the model up in (default: the installed ones, as the CLI).
    """

    def __init__(self, model: str, weights=None, *, device: str = "auto", config=None,
                 data=None, overrides=(), registry=None):
        from .plugins import get_registry

        self.registry = registry if registry is not None else get_registry()
        self.name = self.registry.get_model(model).name  # an unknown name fails here
        self.weights, self.config, self.data = _text(weights), _text(config), _text(data)
        self.device, self.overrides = device, as_sets(overrides)
        self._predictor = None  # (RunContext, Predictor), built by the first predict call

    def __repr__(self) -> str:
        return f"Model({self.name!r}, weights={self.weights!r}, device={self.device!r})"

    def options(self, task: str, *, data=None, config=None, overrides=(), **options) -> RunOptions:
        """The :class:`RunOptions` ``detcore run --model NAME --task TASK ...`` would build."""
        unknown = sorted(set(options) - set(CALL_OPTIONS))
        if unknown:
            raise TypeError(f"unknown option {', '.join(unknown)}: use "
                            f"{', '.join(('data', 'config', 'overrides') + CALL_OPTIONS)}")
        options.setdefault("device", self.device)
        options.setdefault("progress", sys.stderr.isatty())  # the CLI's default
        for key in ("work_dir", "loss_scale"):
            options[key] = _text(options.get(key))
        return RunOptions(model=self.name, task=task, data=_text(data) or self.data,
                          config=_text(config) or self.config, weights=self.weights,
                          sets=self.overrides + as_sets(overrides), **options)

    def run(self, task: str, **options) -> dict | None:
        """Any ``--task`` through the runner; the ``result.json`` dict (``None`` on ranks > 0)."""
        from .runner import run

        return run(self.registry, self.options(task, **options))

    def train(self, data=None, *, config=None, epochs=None, overrides=(), **options) -> dict:
        """``--task train`` (from the Model's weights when it has some, as ``--weights``);
        ``epochs`` sets ``train.epochs``."""
        return self._fit("train", data, config, epochs, overrides, options)

    def finetune(self, data=None, *, config=None, epochs=None, overrides=(), **options) -> dict:
        """``--task finetune``: train from the Model's weights, class-count layers re-initialised."""
        return self._fit("finetune", data, config, epochs, overrides, options)

    def _fit(self, task, data, config, epochs, overrides, options) -> dict:
        sets = as_sets(overrides) + (() if epochs is None else (f"train.epochs={epochs}",))
        result = self.run(task, data=data, config=config, overrides=sets, **options)
        if result is not None:
            self.weights, self._predictor = result["artifacts"]["checkpoint"], None
        return result

    def eval(self, data=None, **options) -> dict:
        """``--task eval``: COCO mAP of the Model's weights on ``data``'s val2017."""
        return self.run("eval", data=data, **options)

    def export(self, format: str = "onnx", **options) -> dict:
        """``--task export --format FORMAT``; the file is ``result["artifacts"]["onnx"]``."""
        return self.run("export", fmt=format, **options)

    def predict(self, source, *, threshold: float | None = None) -> list[Detections]:
        """Detections for an image path, a folder (its images, sorted; a COCO root: val2017), a
        PIL image, an HxWx3 uint8 RGB array, or a list of these; one :class:`Detections` per
        image, in that image's pixels. ``threshold``: default ``predict.score_threshold``."""
        from .runner import patched

        images, paths = load_images(source)
        ctx, predictor = self._loaded()
        with patched(ctx):
            return predictor(images, paths, threshold)

    def _loaded(self):
        """The predict run resolved and the model loaded, once per Model and weights."""
        if self._predictor is None:
            from .runner import patched, prepare
            from .tasks import load_predictor

            ctx = prepare(self.registry, self.options("predict"), in_memory=True)
            with patched(ctx):
                self._predictor = ctx, load_predictor(ctx)
        return self._predictor


def load_images(source) -> tuple[list, list[str | None]]:
    """``predict``'s inputs as HxWx3 uint8 RGB arrays, with the path each was read from."""
    from PIL import Image

    from .data.transforms import to_rgb_array
    from .predict import image_paths, read_image

    images, paths = [], []
    for item in source if isinstance(source, (list, tuple)) else [source]:
        if isinstance(item, (str, Path)):
            if not Path(item).exists():
                raise UserError(f"{item} does not exist: pass an image file, a folder of images, "
                                f"a PIL image or an HxWx3 uint8 RGB array")
            for path in image_paths(Path(item), 0):
                images.append(read_image(path))
                paths.append(str(path))
            continue
        if isinstance(item, Image.Image):
            images.append(to_rgb_array(item))
        elif isinstance(item, np.ndarray):
            images.append(_rgb(item))
        else:
            raise UserError(f"cannot predict on a {type(item).__name__}: pass an image path, a "
                            f"folder, a PIL image or an HxWx3 uint8 RGB array (or a list of them)")
        paths.append(None)
    if not images:
        raise UserError("predict was given no images")
    return images, paths


def _rgb(array: np.ndarray) -> np.ndarray:
    """An HxWx3 uint8 RGB array as given (HxW grayscale repeated to 3 channels)."""
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise UserError(f"an image array must be HxWx3 uint8 RGB (or HxW uint8); got "
                        f"{'x'.join(map(str, array.shape))} {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array)
