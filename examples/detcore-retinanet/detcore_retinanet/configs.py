"""Named configs, merged over detcore's core defaults (see detcore.config.CORE_DEFAULTS), and
the keys this plugin adds (``model.*``), declared so a run checks their values when it starts."""
from detcore.config_schema import integer, text

MODEL_KEYS = {
    "model.backbone": text("a torchvision ResNet name (resnet18, resnet50, resnext50_32x4d...)"),
    "model.trainable_layers": integer("backbone stages trained, from the last (5: all)", ge=0,
                                      le=5),
}

SMOKE = {
    "model": {"backbone": "resnet18", "trainable_layers": 5},
    "data": {"input_size": [256, 256], "batch_size": 8, "workers": 2},
    "train": {"epochs": 12, "max_minutes": 10.0},
    "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4},
    "scheduler": {"name": "cosine", "warmup_steps": 50},
}

CONFIGS = {"smoke": SMOKE}
