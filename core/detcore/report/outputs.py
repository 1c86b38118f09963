"""What ``train``, ``finetune`` and ``eval`` leave for people after ``result.json``'s numbers: the
resolved config (``config.json``, which ``detcore report`` diffs between runs) and, with
``eval.plots`` on, ``WORK_DIR/plots/*.png``. Rank 0 only."""
from __future__ import annotations

from pathlib import Path

CONFIG_FILE = "config.json"
PLOTS_DIR = "plots"


def write_outputs(ctx, val_dataset=None) -> None:
    """Write them for ``ctx``'s run and name them in ``ctx.artifacts`` (``config_file``,
    ``plots``). ``val_dataset``: the validation split if the task has it already."""
    if not ctx.is_main:
        return
    from ..result import write_json_atomic

    work = Path(ctx.work_dir)
    ctx.artifacts["config_file"] = str(write_json_atomic(work / CONFIG_FILE, ctx.config))
    if not ctx.config["eval"]["plots"]:
        return
    from .plots import write_plots

    drawn = write_plots(work / PLOTS_DIR, ctx.artifacts,
                        lambda: val_dataset if val_dataset is not None else ctx.dataset("val"),
                        float(ctx.config["predict"]["score_threshold"]))
    if drawn:
        ctx.artifacts["plots"] = str(work / PLOTS_DIR)
