"""Core's default hook implementations (``trylast``), each a thin door to its service."""
from __future__ import annotations

from . import hookimpl


@hookimpl(trylast=True)
def train(ctx):
    from .train.service import train as fit_and_evaluate

    return fit_and_evaluate(ctx)


@hookimpl(trylast=True)
def evaluate(ctx, model, dataset):
    from .evaluate import evaluate_model

    return evaluate_model(ctx, model, dataset)


@hookimpl(trylast=True)
def export(ctx, model, path, fmt):
    from .export import export_model

    return export_model(ctx, model, path, fmt)


@hookimpl(trylast=True)
def log_metrics(ctx, event, step, epoch, metrics):
    """TensorBoard event files in ``WORK_DIR/tensorboard`` (when tensorboard is installed)."""
    from .train.tensorboard import log_metrics as to_tensorboard

    to_tensorboard(ctx, event, step, epoch, metrics)


@hookimpl(trylast=True)
def baseline_train_step(spec, config, model, optimizer):
    """A bare PyTorch step over the Detector: no upstream code (``detcore bench`` says so)."""

    def step(images, targets):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step.upstream = False
    return step
