"""``WORK_DIR/plots/*.png`` after ``train`` and ``eval``, drawn from what the run wrote.

``loss_lr.png`` (loss terms and learning rate per logged step, from ``metrics.jsonl``), ``map.png``
(mAP per epoch, from ``evals.jsonl``: each ``train.eval_every`` evaluation and the final one),
``pr_bbox.png`` / ``pr_segm.png`` (precision-recall per class at IoU 0.5 and 0.5:0.95, from the
evaluation's own precision array), ``confusion.png`` (at :data:`CONFUSION_IOU` and
``predict.score_threshold``, both in its title) and ``val_grid.png`` (validation images, ground
truth beside predictions). Each is drawn only when its input exists in this run's artifacts.

matplotlib is optional (``pip install 'detcore[plots]'``) and imported here only, lazily, with
the headless Agg canvas: without it, one log line and no plots, never a failed run.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from .curves import IOU_50, IOU_ALL, confusion_matrix, pr_curves, reported_ap

log = logging.getLogger("detcore.report")

#: The IoU at which the confusion matrix counts a prediction as finding an object (COCO's AP50).
CONFUSION_IOU = 0.5
#: Validation images in ``val_grid.png``.
GRID_IMAGES = 8
#: Per-class curves and counts are labelled up to this many classes (COCO's 80 would be noise).
MAX_LABELLED = 20
#: Keys of a ``metrics.jsonl`` record that are not loss terms.
NOT_LOSSES = {"step", "epoch", "lr", "fps", "skipped_steps", "loss_scale"}


def write_plots(out_dir: Path, artifacts: dict, val_dataset, score_threshold: float) -> dict:
    """Draw every plot this run's ``artifacts`` allow into ``out_dir`` (emptied of earlier PNGs);
    return ``{name: path}``. ``val_dataset()`` returns the validation split (called only for
    the plots that need class names, ground truth or images)."""
    figure_class = matplotlib_figure()
    if figure_class is None:
        log.info("plots skipped: matplotlib is not installed (pip install 'detcore[plots]')")
        return {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()
    drawn = figures(figure_class, artifacts, val_dataset, score_threshold)
    return {name: str(save(fig, out_dir / f"{name}.png")) for name, fig in drawn.items()}


def figures(Figure, artifacts: dict, val_dataset, score_threshold: float) -> dict:
    """``{name: matplotlib Figure}`` for each plot whose input is among ``artifacts``."""
    from ..evaluate import load_curves
    from ..train.runlog import read_jsonl

    out = {}
    steps = read_jsonl(artifacts["metrics_log"]) if "metrics_log" in artifacts else []
    if steps:
        out["loss_lr"] = loss_lr_figure(Figure, steps)
    evals = read_jsonl(artifacts["eval_log"]) if "eval_log" in artifacts else []
    if evals:
        out["map"] = map_figure(Figure, evals)
    curves = load_curves(artifacts["eval_curves"]) if "eval_curves" in artifacts else {}
    predictions = (json.loads(Path(artifacts["predictions"]).read_text())
                   if "predictions" in artifacts else None)
    if not curves and predictions is None:
        return out
    data = val_dataset()
    names = {cat: data.coco.cats[cat]["name"] for cat in data.label_to_cat}
    for iou_type, arrays in curves.items():
        out[f"pr_{iou_type}"] = pr_figure(Figure, arrays, names, iou_type)
    if predictions is not None:
        matrix = confusion_matrix(data.coco, predictions, data.ids, data.label_to_cat,
                                  CONFUSION_IOU, score_threshold)
        out["confusion"] = confusion_figure(Figure, matrix, data.class_names, CONFUSION_IOU,
                                            score_threshold)
        out["val_grid"] = grid_figure(Figure, data, predictions, score_threshold)
    return out


def matplotlib_figure():
    """matplotlib's ``Figure`` (drawn on the Agg canvas by :func:`save`), or None if absent."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def save(fig, target):
    """``fig`` as a PNG at ``target`` (a path or a binary file object), drawn by Agg."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(target, dpi=100, format="png")
    return target


def loss_lr_figure(Figure, steps: list[dict]):
    """Each loss term and the total, and the learning rate, against the step."""
    fig = Figure(figsize=(8, 6), layout="constrained")
    loss_ax, lr_ax = fig.subplots(2, 1, height_ratios=(2, 1))
    x = [r["step"] for r in steps]
    terms = [k for k in steps[-1] if k not in NOT_LOSSES and k != "loss"]
    for key in terms:
        loss_ax.plot(x, [r.get(key, math.nan) for r in steps], label=key, linewidth=1)
    loss_ax.plot(x, [r["loss"] for r in steps], label="loss (total)", color="black", linewidth=2)
    loss_ax.set(title="Training loss per step", xlabel="step", ylabel="loss")
    loss_ax.legend(fontsize="small")
    loss_ax.grid(alpha=0.3)
    lr_ax.plot(x, [r["lr"] for r in steps], color="tab:red")
    lr_ax.set(title="Learning rate", xlabel="step", ylabel="learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    lr_ax.grid(alpha=0.3)
    return fig


def map_figure(Figure, evals: list[dict]):
    """COCO mAP and mAP@0.5 (bbox, and segm for segmentation models) per evaluated epoch."""
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    x = [r["epoch"] for r in evals]
    for key in ("bbox_mAP", "bbox_mAP_50", "segm_mAP", "segm_mAP_50"):
        if key in evals[-1]:
            ax.plot(x, [r.get(key, math.nan) for r in evals], marker="o", label=key)
    ax.set(title="mAP per epoch" + (" (final evaluation only)" if len(evals) == 1 else ""),
           xlabel="epoch (completed)", ylabel="mAP", ylim=(0, 1))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def pr_figure(Figure, arrays: dict, names: dict[int, str], iou_type: str):
    """Per-class precision-recall at IoU 0.5 and 0.5:0.95, and their mean (whose area is the
    reported mAP). Lines carry ``gid`` ``class:NAME`` or ``mean`` for tests to read back."""
    fig = Figure(figsize=(12, 5), layout="constrained")
    for ax, iou in zip(fig.subplots(1, 2), (IOU_50, IOU_ALL)):
        curves = pr_curves(arrays, names, iou)
        labelled = len(curves) <= MAX_LABELLED
        for curve in curves:
            ax.plot(curve.recall, curve.precision, linewidth=1, gid=f"class:{curve.name}",
                    label=f"{curve.name} (AP {curve.ap:.3f})" if labelled else None)
        if curves:
            mean = sum(c.precision for c in curves) / len(curves)
            ax.plot(curves[0].recall, mean, color="black", linewidth=2.5, gid="mean",
                    label=f"all classes (mAP {reported_ap(arrays, iou):.3f})")
        ax.set(title=f"IoU {iou}" + (" (mean over 10 thresholds)" if iou == IOU_ALL else ""),
               xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(fontsize="small", loc="upper right")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{iou_type} precision-recall per class (COCO, 101-point interpolated)")
    return fig


def confusion_figure(Figure, matrix, class_names: list[str], iou: float, score: float):
    labels = [*class_names, "background"]
    n = len(labels)
    side = min(16.0, 3 + 0.45 * n)
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, label="count")
    ticks = range(n) if n <= MAX_LABELLED + 1 else []
    ax.set_xticks(list(ticks), [labels[i] for i in ticks], rotation=45, ha="right")
    ax.set_yticks(list(ticks), [labels[i] for i in ticks])
    if n <= MAX_LABELLED + 1:
        high = matrix.max() or 1
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center",
                    color="white" if count > high / 2 else "black", fontsize="small")
    ax.set(xlabel="predicted class (background: an object nothing found)",
           ylabel="true class (background: a prediction on no object)",
           title=f"Confusion matrix at IoU >= {iou:g}, score >= {score:g}")
    return fig


def grid_figure(Figure, data, predictions: list[dict], score: float):
    """The first :data:`GRID_IMAGES` readable validation images, ground truth (left) beside the
    predictions scoring at least ``score`` (right), in the images' own pixels."""
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    colours = colormaps["tab10"]
    label_of = {cat: i for i, cat in enumerate(data.label_to_cat)}
    shown = []
    for image_id in data.ids:
        image = data.read_image(image_id)
        if image is not None:
            shown.append((image_id, image))
        if len(shown) == GRID_IMAGES:
            break
    by_image: dict[int, list[dict]] = {}
    for p in predictions:
        if p["score"] >= score:
            by_image.setdefault(p["image_id"], []).append(p)
    rows = max(1, math.ceil(len(shown) / 2))
    fig = Figure(figsize=(10, 2.7 * rows), layout="constrained")
    axes = fig.subplots(rows, 4, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for n, (image_id, image) in enumerate(shown):
        truth = [a for a in data.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        found = by_image.get(image_id, [])
        for ax, boxes, title in ((axes[2 * n], truth, f"image {image_id}: ground truth"),
                                 (axes[2 * n + 1], found, f"predictions, score >= {score:g}")):
            ax.imshow(image)
            for b in boxes:
                label = label_of.get(b["category_id"], 0)
                x, y, w, h = b["bbox"]
                ax.add_patch(Rectangle((x, y), w, h, fill=False, linewidth=1.5,
                                       edgecolor=colours(label % 10)))
                text = data.class_names[label] + (f" {b['score']:.2f}" if "score" in b else "")
                ax.text(x, y, text, fontsize=6, color="white", va="bottom",
                        bbox={"facecolor": colours(label % 10), "pad": 1, "linewidth": 0})
            ax.set_title(f"{title} ({len(boxes)})", fontsize="small")
    fig.suptitle("Validation images: ground truth (left) beside predictions (right)")
    return fig


def comparison_figure(Figure, runs: list[tuple[str, list[dict], list[dict]]]):
    """Several runs on shared axes: total loss per step, and bbox mAP per epoch, one line per
    run (``runs``: label, ``metrics.jsonl`` records, ``evals.jsonl`` records)."""
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    loss_ax, map_ax = fig.subplots(1, 2)
    for label, steps, evals in runs:
        if steps:
            loss_ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], label=label)
        if evals:
            map_ax.plot([r["epoch"] for r in evals], [r.get("bbox_mAP", math.nan) for r in evals],
                        marker="o", label=label)
    loss_ax.set(title="Training loss per step", xlabel="step", ylabel="loss (total)")
    map_ax.set(title="bbox mAP per epoch", xlabel="epoch (completed)", ylabel="bbox mAP",
               ylim=(0, 1))
    for ax in (loss_ax, map_ax):
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize="small")
    fig.suptitle("Runs compared")
    return fig
