"""Core's default hook implementations (``trylast``): plugins override by returning non-None."""
from __future__ import annotations

from . import hookimpl


@hookimpl(trylast=True)
def train(ctx):
    from .tasks import default_train

    return default_train(ctx)


@hookimpl(trylast=True)
def evaluate(ctx, model, dataset):
    from .evaluate import evaluate_model

    return evaluate_model(ctx, model, dataset)


@hookimpl(trylast=True)
def export(ctx, model, path, fmt):
    from .tasks import default_export

    return default_export(ctx, model, path, fmt)


@hookimpl(trylast=True)
def baseline_train_step(spec, config, model, optimizer):
    def step(images, targets):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step
