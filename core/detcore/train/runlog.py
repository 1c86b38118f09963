"""Where a training run's numbers go, on rank 0 only: ``metrics.jsonl`` (one line per logged
step: loss terms, ``lr``, ``fps``...), ``evals.jsonl`` (one line per evaluation: COCO metrics at
an epoch), and the ``log_metrics`` hook of every plugin (TensorBoard by default, any tracker a
plugin adds). One object sends each number to all three, so the files, the plots drawn from them
and the trackers never disagree.
"""
from __future__ import annotations

import json
from pathlib import Path


class RunLog:
    def __init__(self, ctx):
        self.ctx = ctx
        self.on = ctx.is_main
        self.steps_path = Path(ctx.work_dir) / "metrics.jsonl"
        self.evals_path = Path(ctx.work_dir) / "evals.jsonl"

    def start(self, step: int, epoch: int) -> None:
        """A fresh run starts empty logs; ``--resume`` keeps the lines up to its checkpoint's step
        (lines logged after it, before the stop, are logged again as the steps are re-run)."""
        if not self.on:
            return
        for path in (self.steps_path, self.evals_path):
            _keep_until(path, step if self.ctx.resume else None)
        self._emit("start", step, epoch, {})

    def step(self, step: int, epoch: int, metrics: dict) -> None:
        if self.on:
            _append(self.steps_path, {"step": step, "epoch": epoch, **metrics})
            self._emit("step", step, epoch, metrics)

    def epoch(self, step: int, epoch: int, metrics: dict) -> None:
        if self.on:
            self._emit("epoch", step, epoch, metrics)

    def eval(self, step: int, epoch: int, metrics: dict) -> None:
        if self.on:
            _append(self.evals_path, {"step": step, "epoch": epoch, **metrics})
            self._emit("eval", step, epoch, metrics)

    def end(self, step: int, epoch: int) -> None:
        if self.on:
            self._emit("end", step, epoch, {})

    def _emit(self, event: str, step: int, epoch: int, metrics: dict) -> None:
        self.ctx.hooks.log_metrics(ctx=self.ctx, event=event, step=step, epoch=epoch,
                                   metrics=dict(metrics))


def _append(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")


def _keep_until(path: Path, step: int | None) -> None:
    """Drop ``path`` (``step`` None) or its lines logged after ``step``."""
    if not path.is_file():
        return
    if step is None:
        path.unlink()
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))


def read_jsonl(path: Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` / ``evals.jsonl`` ([] when the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
