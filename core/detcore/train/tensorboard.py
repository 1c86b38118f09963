"""Core's default ``log_metrics``: TensorBoard event files in ``WORK_DIR/tensorboard``.

Written with ``torch.utils.tensorboard.SummaryWriter`` when the ``tensorboard`` package is
installed (``pip install 'detcore[tensorboard]'``) and ``train.tensorboard`` is on; otherwise one
log line and nothing else. Tags: ``train/<key>`` per logged step, ``epoch/<key>`` per epoch,
``eval/<key>`` per evaluation, all at the global step they were logged at (so ``--resume`` can
purge what came after its checkpoint); the resolved config is the text ``config``. ``tensorboard --logdir WORK_DIR/tensorboard`` shows them.
"""
from __future__ import annotations

import json
import logging
import numbers
from pathlib import Path

log = logging.getLogger("detcore.train")

#: One open writer per run (keyed by the run's context): opened on the run's first event,
#: closed at ``"end"``.
_writers: dict[int, object] = {}
_said_missing = False


def log_metrics(ctx, event: str, step: int, epoch: int, metrics: dict) -> None:
    if not ctx.config["train"]["tensorboard"]:
        return
    writer = _writers.get(id(ctx))
    if event == "end":
        if writer is not None:
            writer.close()
            del _writers[id(ctx)]
        return
    if writer is None:
        writer = _open(ctx, step)
        if writer is None:
            return
    if event == "start":
        writer.add_text("config", "```\n" + json.dumps(ctx.config, indent=2, default=str)
                        + "\n```", step)
    prefix = "train" if event == "step" else event
    for key, value in metrics.items():
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            writer.add_scalar(f"{prefix}/{key}", value, step)
    writer.flush()


def _open(ctx, step: int):
    """A writer for ``ctx``'s run: a fresh run starts a clean folder; ``--resume`` drops the
    events logged after the checkpoint it continues from (``purge_step``)."""
    global _said_missing
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _said_missing:
            log.info("tensorboard is not installed: no TensorBoard event files "
                     "(pip install 'detcore[tensorboard]')")
            _said_missing = True
        return None
    folder = Path(ctx.work_dir) / "tensorboard"
    if not ctx.resume:
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
    writer = SummaryWriter(str(folder), purge_step=step + 1 if ctx.resume else None)
    _writers[id(ctx)] = writer
    ctx.artifacts["tensorboard"] = str(folder)
    return writer
