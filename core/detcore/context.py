"""What one run is: the user's options (:class:`RunOptions`) and the values the runner resolved
from them once (:class:`RunContext`). Torch-free: the CLI imports the choices from here."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .devices import CHOICES as DEVICES
from .spec import ModelSpec

#: The closed choices of ``detcore run``: the CLI offers them, the runner checks API callers once.
CHOICES = {"device": DEVICES, "patches": ("on", "off", "auto"), "amp": ("off", "fp16", "bf16"),
           "engine": ("onnxruntime", "ais_bench"), "fmt": ("onnx", "om")}


@dataclass
class RunOptions:
    """``detcore run``'s options as the user gave them (None: not given)."""

    model: str
    task: str
    data: str | None = None
    config: str | None = None
    device: str = "auto"
    work_dir: str | None = None
    weights: str | None = None
    sets: tuple[str, ...] = ()
    resume: bool = False
    patches: str = "auto"
    amp: str | None = None
    loss_scale: str | None = None
    engine: str = "onnxruntime"
    batch_size: int | None = None
    fmt: str = "onnx"
    progress: bool = True


@dataclass
class RunContext:
    """One run's resolved values: what tasks, services and a plugin's ``train``/``evaluate``/
    ``export`` hooks receive. Nothing below the runner decides any of these again."""

    spec: ModelSpec
    config_name: str
    config: dict
    device: Any  # torch.device
    work_dir: Path
    data_root: Path | None  # None: the Python API's predict, which brings its own images
    options: RunOptions
    hooks: Any  # the model's hooks: its plugin's implementations, then core's defaults
    progress: bool = True
    rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    weights: Path | None = None  # the checkpoint (or exported model) the task reads
    init_weights: Path | None = None  # train/finetune: weights to start from
    finetune: bool = False  # re-initialise class-count layers when loading init_weights
    resume: bool = False
    artifacts: dict = field(default_factory=dict)
    patches: list = field(default_factory=list)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def letterbox(self):
        """How this run fits images to the canvas (``data.letterbox``): datasets and predict."""
        from .data.transforms import LetterboxPolicy

        return LetterboxPolicy.from_config(self.config["data"])

    def dataset(self, split: str, train: bool = False, input_size=None):
        """The ``split`` of this run's data (a COCO, YOLO or VOC folder, or the synthetic set),
        letterboxed."""
        from .data.coco import CocoDetection

        dcfg = self.config["data"]
        return CocoDetection(self.data_root, split, input_size or dcfg["input_size"],
                             masks=self.spec.task_type == "segm", hflip_prob=float(dcfg["hflip"]),
                             train=train, max_images=int(dcfg["max_images"]),
                             letterbox=self.letterbox)

    def build_model(self, num_classes: int):
        """The plugin's model for ``num_classes`` classes (a plugin failure is one line)."""
        import os

        from .errors import PluginError, UserError

        try:
            model = self.hooks.build_model(spec=self.spec, config=self.config,
                                           num_classes=num_classes)
        except UserError:
            raise
        except Exception as exc:
            if os.environ.get("DETCORE_DEBUG") == "1":
                raise
            raise PluginError(f"plugin {self.spec.plugin!r} failed to build {self.spec.name!r}: "
                              f"{type(exc).__name__}: {exc}; check the model.* config keys "
                              f"(DETCORE_DEBUG=1 shows the traceback)") from None
        if model is None:
            raise PluginError(f"plugin {self.spec.plugin!r} returned no model for {self.spec.name!r}")
        return model
