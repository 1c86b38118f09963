"""Named configs, merged over detcore's core defaults (see detcore.config.CORE_DEFAULTS)."""

SMOKE = {
    "model": {"backbone": "resnet18", "trainable_layers": 5},
    "data": {"input_size": [256, 256], "batch_size": 8, "workers": 2},
    "train": {"epochs": 12, "max_minutes": 10.0},
    "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4},
    "scheduler": {"name": "cosine", "warmup_steps": 50},
}

CONFIGS = {"smoke": SMOKE}
