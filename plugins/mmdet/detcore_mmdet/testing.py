"""What the mmdet-family plugins' "proven against upstream" tests share: the same detections,
in the same order, from the in-memory model, from ``detcore run --task eval`` and from mmdet."""
from __future__ import annotations

import json
from pathlib import Path


def detection_order(r: dict):
    """A total order on COCO result entries, so two result files compare entry by entry."""
    return r["image_id"], -r["score"], r["category_id"], r["bbox"]


def in_memory_predictions(model, root, config) -> list[dict]:
    """The in-memory model's COCO results on ``root``'s val split, as core's eval makes them."""
    import torch

    from detcore.data.coco import CocoDetection
    from detcore.evaluate import predict_dataset
    from detcore.train.loader import eval_loader

    dataset = CocoDetection(root, "val", config["data"]["input_size"],
                            masks=model.task_type == "segm")
    loader = eval_loader(dataset, int(config["eval"]["batch_size"]), 0, 0, 1)
    return sorted(predict_dataset(model, loader, torch.device("cpu")), key=detection_order)


def cli_predictions(model: str, work: Path, weights, root, *sets) -> tuple[dict, list[dict]]:
    """``detcore run --task eval`` through the CLI: ``(result.json, its predictions, ordered)``."""
    from detcore.testing.cli import run_task

    result = run_task(model, "eval", work, "--weights", weights, "--data", root, *sets)
    got = json.loads(Path(result["artifacts"]["predictions"]).read_text())
    return result, sorted(got, key=detection_order)


def assert_same_predictions(got: list[dict], expected: list[dict]) -> None:
    """Entry by entry: same image and category, scores within 2e-5, boxes within 0.011 px (core
    rounds to 0.01), the same RLE masks where there are masks."""
    import pytest

    assert len(expected) > 20, "the comparison needs detections"
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert (g["image_id"], g["category_id"]) == (e["image_id"], e["category_id"])
        assert g["score"] == pytest.approx(e["score"], abs=2e-5)
        assert g["bbox"] == pytest.approx(e["bbox"], abs=0.011)
        if "segmentation" in g or "segmentation" in e:
            assert g["segmentation"] == e["segmentation"]
