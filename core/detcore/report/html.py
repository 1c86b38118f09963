"""``detcore report DIR...``: one self-contained HTML page comparing runs side by side.

Each DIR is a run's work dir, read by the names detcore writes there (``result.json``,
``config.json``, ``plots/*.png``, ``metrics.jsonl``, ``evals.jsonl``), so a work dir that was
moved or copied still reports. The page holds the runs' figures from ``result.json``, the config
keys that differ between them, a loss / mAP comparison drawn across runs, and every plot side
by side. Images are inlined as base64 PNG and there is no script and no external file: the page
opens anywhere, offline, and can be sent as it is.
"""
from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .outputs import CONFIG_FILE, PLOTS_DIR

#: Plot files in the order the page shows them, with their headings; others follow by name.
PLOT_TITLES = {"loss_lr": "Loss terms and learning rate per step", "map": "mAP per epoch",
               "pr_bbox": "Precision-recall per class (bbox)",
               "pr_segm": "Precision-recall per class (segm)",
               "confusion": "Confusion matrix", "val_grid": "Validation images"}
#: ``result.json`` keys shown above the metrics, in this order.
SUMMARY_KEYS = ("model", "task", "config", "device", "world_size", "started_at", "duration_s",
                "fps")
_MISSING = "\u2014"
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.best { font-weight: bold; }
.runs { display: grid; gap: 1em; }
figure { margin: 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; }
"""


@dataclass
class Run:
    """One run's work dir, as the page needs it."""

    label: str
    result: dict
    config: dict | None
    plots: dict[str, bytes] = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)


def load_run(work_dir: Path) -> Run:
    from ..train.runlog import read_jsonl

    work_dir = Path(work_dir)
    path = work_dir / "result.json"
    if not path.is_file():
        raise UserError(f"{work_dir} has no result.json: pass the --work-dir of a finished "
                        f"detcore run")
    try:
        result = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc})") from None
    config_path = work_dir / CONFIG_FILE
    config = json.loads(config_path.read_text()) if config_path.is_file() else None
    plots = {p.stem: p.read_bytes() for p in sorted((work_dir / PLOTS_DIR).glob("*.png"))}
    return Run(str(work_dir), result, config, plots, read_jsonl(work_dir / "metrics.jsonl"),
               read_jsonl(work_dir / "evals.jsonl"))


def write_report(work_dirs: list[Path], out: Path) -> Path:
    """Write the page comparing ``work_dirs`` to ``out``; return ``out``."""
    runs = [load_run(d) for d in work_dirs]
    page = render(runs, _comparison_png(runs))
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror}; pass --out with a writable "
                        f"path") from None
    return out


def _comparison_png(runs: list[Run]) -> bytes | None:
    from .plots import comparison_figure, matplotlib_figure, save

    figure_class = matplotlib_figure()
    if figure_class is None or not any(r.steps or r.evals for r in runs):
        return None
    buffer = io.BytesIO()
    save(comparison_figure(figure_class, [(r.label, r.steps, r.evals) for r in runs]), buffer)
    return buffer.getvalue()


def render(runs: list[Run], comparison: bytes | None = None) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>detcore report: {len(runs)} run(s)</title>", f"<style>{_STYLE}</style>",
             "</head><body>", f"<h1>detcore report: {len(runs)} run(s)</h1>",
             "<ol>" + "".join(f"<li><code>{e(r.label)}</code></li>" for r in runs) + "</ol>",
             "<h2>Figures (result.json)</h2>", _summary_table(runs),
             "<h2>Config differences</h2>", _config_diff(runs)]
    if comparison is not None:
        parts += ["<h2>Runs compared</h2>", _figure(comparison, "loss and mAP, all runs")]
    parts.append("<h2>Plots</h2>")
    names = [n for n in PLOT_TITLES if any(n in r.plots for r in runs)]
    names += sorted({n for r in runs for n in r.plots} - set(PLOT_TITLES))
    if not names:
        parts.append("<p>No run has plots (WORK_DIR/plots/*.png).</p>")
    columns = f"repeat({len(runs)}, minmax(0, 1fr))"
    for name in names:
        parts.append(f"<h3>{e(PLOT_TITLES.get(name, name))}</h3>")
        parts.append(f'<div class="runs" style="grid-template-columns: {columns}">')
        for run in runs:
            png = run.plots.get(name)
            parts.append(_figure(png, run.label) if png is not None else
                         f"<figure><figcaption>{e(run.label)}: not drawn</figcaption></figure>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _figure(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Cells are HTML already (escaped by the caller)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary_table(runs: list[Run]) -> str:
    e = html.escape
    metric_keys = list(dict.fromkeys(k for r in runs for k in r.result.get("metrics", {})))
    rows = []
    for key in SUMMARY_KEYS:
        rows.append([f"<th>{e(key)}</th>"] + [f"<td>{e(_show(r.result.get(key)))}</td>"
                                              for r in runs])
    for key in metric_keys:
        values = [r.result.get("metrics", {}).get(key) for r in runs]
        numbers = [v for v in values if isinstance(v, (int, float))]
        best = max(numbers) if "mAP" in key and len(set(numbers)) > 1 else None
        rows.append([f"<th>metrics.{e(key)}</th>"] + [
            f'<td{" class=best" if best is not None and v == best else ""}>{e(_show(v))}</td>'
            for v in values])
    return _table(["", *(f"<code>{e(r.label)}</code>" for r in runs)], rows)


def _config_diff(runs: list[Run]) -> str:
    e = html.escape
    missing = [r.label for r in runs if r.config is None]
    note = (f"<p>No {CONFIG_FILE} in: {', '.join(f'<code>{e(m)}</code>' for m in missing)} "
            f"(written by train, finetune and eval runs).</p>" if missing else "")
    flat = [_flatten(r.config) if r.config is not None else None for r in runs]
    known = [f for f in flat if f is not None]
    if len(known) < 2:
        return note + "<p>Fewer than two runs with a recorded config: nothing to compare.</p>"
    keys = sorted({k for f in known for k in f})
    differ = [k for k in keys if len({_show(f.get(k, _MISSING)) for f in known}) > 1]
    if not differ:
        return note + f"<p>All {len(keys)} config keys are equal.</p>"
    rows = [[f"<th><code>{e(k)}</code></th>"] + [
        f"<td>{e(_show(f.get(k, _MISSING)) if f is not None else 'not recorded')}</td>"
        for f in flat] for k in differ]
    return (note + f"<p>{len(differ)} of {len(keys)} keys differ; the others are equal.</p>"
            + _table(["key", *(f"<code>{e(r.label)}</code>" for r in runs)], rows))


def _flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _show(value) -> str:
    if value is None:
        return _MISSING
    return value if isinstance(value, str) else json.dumps(value)
