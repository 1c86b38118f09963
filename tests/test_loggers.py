"""The ``log_metrics`` hook: core's TensorBoard logger and a third-party tracker run together,
on rank 0 only."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import types

import pytest

from detcore.runner import RunOptions, run

from .conftest import REPO, cli_env
from .plugins import tracker


@pytest.fixture(scope="module")
def tracked(tiny_data, tmp_path_factory):
    """A one-epoch train (6 steps, logged every 2) with the tracker plugin installed beside the
    model's: (work dir, result, the tracker's records)."""
    from detcore.plugins import Registry

    import tests.plugins.tiny as tiny

    work = tmp_path_factory.mktemp("tracked")
    registry = Registry(extra_plugins={"tiny": tiny, "tracker": tracker})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(tracker.LOG_ENV, str(work / "tracker.jsonl"))
        result = run(registry, RunOptions(model="tiny-fcos", task="train", data=str(tiny_data),
                                          device="cpu", work_dir=str(work), progress=False,
                                          sets=("train.epochs=1",)))
    records = [json.loads(l) for l in (work / "tracker.jsonl").read_text().splitlines()]
    return work, result, records


def test_tensorboard_event_file_holds_the_loss(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    work, result, _ = tracked
    assert result["artifacts"]["tensorboard"] == str(work / "tensorboard")
    assert list((work / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(work / "tensorboard"))
    events.Reload()
    logged = [json.loads(l) for l in (work / "metrics.jsonl").read_text().splitlines()]
    loss = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [s for s, _ in loss] == [r["step"] for r in logged] == [2, 4, 6]
    assert [v for _, v in loss] == pytest.approx([r["loss"] for r in logged], rel=1e-6)
    assert events.Scalars("eval/bbox_mAP")[-1].value == pytest.approx(
        result["metrics"]["bbox_mAP"], abs=1e-6)
    assert {"train/lr", "train/classification", "epoch/loss"} <= set(events.Tags()["scalars"])


def test_a_third_party_tracker_runs_beside_tensorboard(tracked):
    work, result, records = tracked
    assert [r["event"] for r in records] == ["start", "step", "step", "step", "epoch", "eval",
                                             "end"]
    assert {r["model"] for r in records} == {"tiny-fcos"} and records[0]["lr_in_config"] == 2e-3
    steps = [r for r in records if r["event"] == "step"]
    logged = [json.loads(l) for l in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["metrics"]["loss"] for r in steps] == [r["loss"] for r in logged]
    assert {"lr", "fps", "classification"} <= set(steps[0]["metrics"])
    epoch = next(r for r in records if r["event"] == "epoch")
    assert (epoch["step"], epoch["epoch"]) == (6, 1)  # the epoch's mean over its 6 steps
    assert {"loss", "classification", "lr"} <= set(epoch["metrics"])
    assert min(r["loss"] for r in logged) < epoch["metrics"]["loss"] < 2 * max(r["loss"] for r in logged)
    evaluation = next(r for r in records if r["event"] == "eval")
    assert evaluation["metrics"]["bbox_mAP"] == result["metrics"]["bbox_mAP"]
    assert list((work / "tensorboard").glob("events.out.tfevents.*"))  # TensorBoard ran too


def test_tensorboard_off_writes_no_event_files(registry, tiny_data, tmp_path):
    result = run(registry, RunOptions(model="tiny-fcos", task="train", data=str(tiny_data),
                                      device="cpu", work_dir=str(tmp_path), progress=False,
                                      sets=("train.max_steps=2", "train.eval_after=false",
                                            "train.tensorboard=false")))
    assert "tensorboard" not in result["artifacts"] and not (tmp_path / "tensorboard").exists()


@pytest.mark.slow
def test_only_rank_0_logs_under_two_workers(tmp_path, cache_dir):
    from detcore.testing.distributed import free_port

    log = tmp_path / "tracker.jsonl"
    env = cli_env(cache_dir, modules="tests.plugins.tiny,tests.plugins.tracker",
                  **{tracker.LOG_ENV: str(log)})
    proc = subprocess.run([sys.executable, "-m", "detcore.cli", "run", "--model", "tiny-fcos",
                           "--task", "train", "--nproc", "2", "--master-port", str(free_port()),
                           "--set", "train.epochs=1", "--work-dir", str(tmp_path / "work"),
                           "--no-progress"], capture_output=True, text=True, timeout=600,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(l) for l in log.read_text().splitlines()]
    assert {r["rank"] for r in records} == {0}
    assert [r["event"] for r in records][0] == "start" and records[-1]["event"] == "end"
    assert "eval" in {r["event"] for r in records}


class StandInMlflow(types.ModuleType):
    """Records the calls the guide's MLflow tracker makes (detcore's side of it, not MLflow's)."""

    def __init__(self):
        super().__init__("mlflow")
        self.calls = []
        for name in ("start_run", "log_dict", "log_metrics", "end_run"):
            setattr(self, name, lambda *a, _name=name, **k: self.calls.append((_name, a, k)))


def test_the_guides_mlflow_tracker_runs_against_a_stand_in(registry, tiny_data, tmp_path,
                                                           monkeypatch):
    from detcore.plugins import Registry

    import tests.plugins.tiny as tiny

    guide = (REPO / "docs" / "writing-a-plugin.md").read_text()
    code = re.search(r"MLflow, for instance.*?```python\n(.*?)```", guide, re.S).group(1)
    plugin = types.ModuleType("detcore_mlflow")
    exec(compile(code, "docs/writing-a-plugin.md", "exec"), plugin.__dict__)
    mlflow = StandInMlflow()
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    registry = Registry(extra_plugins={"tiny": tiny, "mlflow": plugin})
    run(registry, RunOptions(model="tiny-fcos", task="train", data=str(tiny_data), device="cpu",
                             work_dir=str(tmp_path), progress=False,
                             sets=("train.max_steps=2", "train.log_interval=1",
                                   "train.eval_after=false")))
    names = [c[0] for c in mlflow.calls]
    assert names == ["start_run", "log_dict", "log_metrics", "log_metrics", "end_run"]
    assert mlflow.calls[1][1] == (json.loads((tmp_path / "config.json").read_text()),
                                  "config.json")
    logged = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for (_, args, kwargs), record in zip(mlflow.calls[2:4], logged):
        assert kwargs["step"] == record["step"]
        assert args[0]["step/loss"] == record["loss"] and "step/lr" in args[0]
