"""Core's training loop (the default ``train`` hook)."""
from .trainer import Trainer

__all__ = ["Trainer"]
