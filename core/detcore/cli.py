"""The ``detcore`` command. Importing this module must not import torch."""
from __future__ import annotations

import json
import logging
import os
import sys

import click

from .context import CHOICES
from .errors import UserError
from .tasks import TASKS


def _fail(exc: UserError):
    message = " ".join(str(exc).split())  # always one line, whatever the input echoed
    click.echo(f"detcore: error: {message}", err=True)
    sys.exit(exc.exit_code)


class Group(click.Group):
    """Turns :class:`UserError` into one line and an exit code, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            _fail(exc)
        except KeyboardInterrupt:
            click.echo("detcore: interrupted", err=True)
            sys.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="detcore")
def main():
    """detcore: train, evaluate, export and deploy detection models through plugins."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json):
    """List installed plugins, their models, hooks and upstream pins."""
    from dataclasses import asdict

    from .plugins import Registry

    registry = Registry()
    rows = [asdict(p) for p in registry.plugins.values()]
    if as_json:
        click.echo(json.dumps({"plugins": rows}, indent=2))
        return
    if not rows:
        click.echo("no detcore plugins installed (pip install -e plugins/efficientdet ...)")
        return
    for p in rows:
        head = f"{p['name']}  {p['distribution'] or '-'} {p['version'] or ''}".rstrip()
        click.echo(f"{head}  [{p['status']}]" + (f"  {p['reason']}" if p["reason"] else ""))
        click.echo(f"  entry point: {p['value']}")
        if p["models"]:
            click.echo(f"  models: {', '.join(p['models'])}")
        if p["hooks"]:
            click.echo(f"  hooks: {', '.join(p['hooks'])}")
        for u in p["upstream"]:
            mark = "ok" if u["ok"] else "NOT SATISFIED"
            click.echo(f"  pin {u['requirement']}: installed {u['installed'] or 'none'} ({mark})")


@main.command(context_settings={"show_default": True})
@click.option("--model", required=True, help="Model name (see detcore plugins).")
@click.option("--task", required=True, type=click.Choice(TASKS))
@click.option("--data", type=click.Path(),
              help="COCO, YOLO or Pascal VOC dataset folder, or omit for the synthetic set.")
@click.option("--config", help="Named config of the model, or a .yaml/.json file.")
@click.option("--device", default="auto", type=click.Choice(CHOICES["device"]))
@click.option("--work-dir", type=click.Path(), help="Default: work_dirs/MODEL/TASK.")
@click.option("--weights", type=click.Path(), help="Checkpoint, or .onnx/.om for --task infer.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config key.")
@click.option("--resume", is_flag=True, help="Continue from WORK_DIR/checkpoints/last.pt.")
@click.option("--patches", default="auto", type=click.Choice(CHOICES["patches"]),
              help="Vendored NPU patches (auto: on for npu).")
@click.option("--amp", type=click.Choice(CHOICES["amp"]), help="Mixed precision.")
@click.option("--loss-scale", help="'dynamic' or a number (fp16).")
@click.option("--engine", default="onnxruntime", type=click.Choice(CHOICES["engine"]))
@click.option("--batch-size", type=int, help="Batch for infer/export.")
@click.option("--format", "fmt", default="onnx", type=click.Choice(CHOICES["fmt"]))
@click.option("--nproc", type=int, default=1, help="Workers on this machine (torchrun).")
@click.option("--nnodes", type=int, default=1)
@click.option("--node-rank", type=int, default=0)
@click.option("--master-addr", default="127.0.0.1")
@click.option("--master-port", type=int, default=29500)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a TTY).")
def run(nproc, nnodes, node_rank, master_addr, master_port, progress, **kwargs):
    """Run one task of one model."""
    if nproc < 1 or nnodes < 1:
        raise UserError("--nproc and --nnodes must be at least 1")
    if nproc > 1 or nnodes > 1:
        from .launch import launch

        sys.exit(launch(kwargs["device"], nproc, nnodes, node_rank, master_addr, master_port))
    _setup_logging()
    from .context import RunOptions
    from .plugins import get_registry
    from .runner import run as run_task

    progress = sys.stderr.isatty() if progress is None else progress
    result = run_task(get_registry(), RunOptions(progress=progress, **kwargs))
    if result is not None:  # rank 0
        _summarise(result)


def _summarise(result: dict) -> None:
    metrics = ", ".join(f"{k}={v}" for k, v in result["metrics"].items()
                        if isinstance(v, (int, float)))
    fps = f", fps={result['fps']}" if result.get("fps") else ""
    click.echo(f"{result['model']} {result['task']} on {result['device']}: {metrics}{fps}")
    for name, path in result["artifacts"].items():
        if isinstance(path, str):
            click.echo(f"  {name}: {path}")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def doctor(as_json):
    """Check the environment: torch, devices, CANN, compiled ops and plugin pins."""
    from .doctor import checks

    rows = checks()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for row in rows:
            mark = {"ok": "ok ", "missing": "!! ", "info": "-- "}[row["status"]]
            click.echo(f"{mark} {row['name']}: {row['detail']}")
    if any(r["status"] == "missing" for r in rows):
        sys.exit(1)


@main.command()
@click.option("--model", help="Only this model's patches (default: every installed plugin's).")
@click.option("--diff", "show_diff", is_flag=True,
              help="Each replaced upstream function beside its replacement (unified diff).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def patches(model, show_diff, as_json):
    """List vendored patches: targets, NPU limitation, tolerance, torch_npu ops; exit 1 if one
    would refuse to apply (its upstream source differs from the one it was written for)."""
    from .patch_report import collect, refused, render
    from .plugins import get_registry

    groups = collect(get_registry(), model, show_diff)
    click.echo(json.dumps(groups, indent=2) if as_json else render(groups))
    if refused(groups):
        sys.exit(1)


@main.command()
@click.option("--models", help="Comma-separated models (default: every installed model's first variant).")
@click.option("--quick", is_flag=True, help="Fewer steps and batch sizes (the CI size: about 5 minutes on 2 cores).")
@click.option("--device", default="cpu", type=click.Choice([d for d in CHOICES["device"] if d != "auto"]),
              help="cuda runs the coco configs with AMP, next to the reference figures.")
@click.option("--out", default="work_dirs/bench", show_default=True, type=click.Path())
@click.option("--weights", multiple=True, metavar="MODEL=FILE",
              help="Trained weights for MODEL's deployment-formats accuracy rows (repeatable; "
                   "default: the train phase's few steps, whose mAP is near 0).")
def bench(models, quick, device, out, weights):
    """Measure training, inference, COCO-eval and start-up figures in one run."""
    from pathlib import Path

    from .bench.run import run as run_bench
    from .plugins import get_registry

    registry = get_registry()
    names = models.split(",") if models else _default_bench_models(registry)
    for name in names:
        registry.get_model(name)
    trained = {}
    for item in weights:
        name, _, path = item.partition("=")
        if name not in names or not path or not Path(path).is_file():
            raise UserError(f"--weights {item}: expected MODEL=FILE with MODEL one of "
                            f"{', '.join(names)} and FILE an existing checkpoint")
        trained[name] = path  # as given: the phases run in this directory, the table shows it
    command = " ".join(["detcore bench", *(["--models", models] if models else []),
                        *(["--quick"] if quick else []), "--device", device, "--out", out,
                        *[f"--weights {w}" for w in weights]])
    report = run_bench(names, quick, device, Path(out), command, trained)
    click.echo((Path(out) / "bench.md").read_text())
    if any("error" in row for row in report["train"] + report["infer"]):
        sys.exit(1)


def _default_bench_models(registry) -> list[str]:
    """One model per plugin: the first it declares (efficientdet-d0, fcos, solov2...)."""
    seen, names = set(), []
    for spec in registry.models.values():
        if spec.plugin not in seen:
            seen.add(spec.plugin)
            names.append(spec.name)
    return names


@main.command()
@click.argument("work_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--out", default="report.html", show_default=True, type=click.Path(),
              help="The HTML file to write.")
def report(work_dirs, out):
    """One self-contained HTML page comparing runs (their WORK_DIRs) side by side: figures from
    result.json, config differences, plots."""
    from pathlib import Path

    from .report.html import write_report

    _setup_logging()
    path = write_report([Path(d) for d in work_dirs], Path(out))
    click.echo(f"wrote {path} ({len(work_dirs)} run(s))")


@main.command("new-plugin")
@click.argument("name")
@click.option("--dir", "parent", default=".", show_default=True, type=click.Path(),
              help="Where to create detcore-NAME/.")
def new_plugin(name, parent):
    """Create a plugin package skeleton that passes the conformance suite."""
    from .scaffold import new_plugin as scaffold

    target = scaffold(name, parent)
    click.echo(f"created {target}: pip install -e {target} && detcore plugins")


@main.group()
def data():
    """Datasets."""


@data.command()
@click.argument("directory", type=click.Path())
@click.option("--train", "num_train", default=256, show_default=True)
@click.option("--val", "num_val", default=64, show_default=True)
@click.option("--classes", "num_classes", default=3, show_default=True)
@click.option("--seed", default=0, show_default=True)
def synth(directory, num_train, num_val, num_classes, seed):
    """Write the synthetic COCO-layout dataset to DIRECTORY."""
    from pathlib import Path

    from .data.synthetic import SHAPES, SynthSpec, write_synthetic

    if not 1 <= num_classes <= len(SHAPES):
        raise UserError(f"--classes must be between 1 and {len(SHAPES)}")
    if num_train < 1 or num_val < 1:
        raise UserError("--train and --val must be at least 1")
    target = Path(directory)
    if target.exists() and any(target.iterdir()):
        raise UserError(f"{target} exists and is not empty; choose a new folder")
    write_synthetic(target, SynthSpec(num_train=num_train, num_val=num_val,
                                      num_classes=num_classes, seed=seed))
    click.echo(f"wrote {num_train}+{num_val} images, {num_classes} classes to {target}")


@data.command()
@click.argument("directory", type=click.Path())
@click.option("--decode/--no-decode", default=True, show_default=True,
              help="Decode every image (finds truncated files); --no-decode reads headers only.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def check(directory, decode, as_json):
    """Validate a COCO, YOLO or Pascal VOC dataset without training; exit 2 on errors."""
    from pathlib import Path

    from .data.check import check_dataset, summary_text

    logging.getLogger("detcore.data").addHandler(logging.NullHandler())  # the summary counts them
    summary = check_dataset(Path(directory), decode, progress=sys.stderr.isatty() and not as_json)
    click.echo(json.dumps(summary, indent=2) if as_json else summary_text(summary))
    if summary["errors"]:
        raise UserError(f"{directory}: {summary['errors']} error(s) in the dataset (listed above); "
                        f"training drops what it cannot use, or stops where a split does not load")


def _setup_logging() -> None:
    import warnings

    logging.basicConfig(level=os.environ.get("DETCORE_LOG", "INFO"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"detcore: warning: {msg}\n"


if __name__ == "__main__":
    main()
