"""docs/result-schema.md lists every key each task writes into result.json."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .conftest import REPO

COCO = {f"{kind}_{name}" for kind in ("bbox", "segm")
        for name in ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")}


def documented() -> dict[str, tuple[set, set]]:
    """task -> (metric keys, artifact keys) from the doc's per-task table."""
    rows = {}
    doc = (REPO / "docs" / "result-schema.md").read_text()
    for line in doc.split("## Per task", 1)[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`\w+`", cells[0]):
            task = cells[0].strip("`")
            keys = [set(re.findall(r"`(\w+)`", c)) - {"train"} for c in cells[1:]]
            for side in (0, 1) if "as `train`" in line else ():
                keys[side] |= rows["train"][side]
            if "COCO" in cells[1]:
                keys[0] |= COCO
            keys[1].add("patches")
            rows[task] = (keys[0], keys[1])
    return rows


@pytest.mark.slow
def test_every_task_writes_only_documented_keys(trained, run_cli, tmp_path):
    docs = documented()
    assert set(docs) == {"train", "finetune", "perf", "eval", "predict", "export", "infer"}
    weights = trained[0] / "checkpoints" / "last.pt"
    results = {"train": trained[1]}
    runs = {"finetune": ["--weights", weights, "--set", "train.max_steps=2"],
            "perf": ["--set", "train.perf_steps=2"], "eval": ["--weights", weights],
            "predict": ["--weights", weights], "export": ["--weights", weights]}
    for task, args in runs.items():
        proc = run_cli("run", "--model", "tiny-fcos", "--task", task, "--work-dir", tmp_path / task,
                       "--no-progress", *args)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[task] = json.loads((tmp_path / task / "result.json").read_text())
    proc = run_cli("run", "--model", "tiny-fcos", "--task", "infer", "--work-dir", tmp_path / "infer",
                   "--weights", results["export"]["artifacts"]["onnx"], "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    results["infer"] = json.loads((tmp_path / "infer" / "result.json").read_text())
    for task, result in results.items():
        metrics, artifacts = docs[task]
        assert set(result["metrics"]) <= metrics, (task, set(result["metrics"]) - metrics)
        assert set(result["artifacts"]) <= artifacts, (task, set(result["artifacts"]) - artifacts)
