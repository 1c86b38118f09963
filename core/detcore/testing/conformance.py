"""The checks every detcore plugin model must pass, as a pytest class to subclass.

Usage in a plugin's tests::

    from detcore.testing import ConformanceSuite

    class TestMyModel(ConformanceSuite):
        model = "my-model"
        overrides = ("data.input_size=[128,128]", "data.batch_size=2")

Each check runs on CPU against a small synthetic dataset and the real model; the
short training, eval and export run through core's own code paths.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from .. import API_VERSION


class ConformanceSuite:
    #: The ``--model`` name to check.
    model: str = ""
    #: ``--set`` overrides that make the checks small (input size, batch, widths...).
    overrides: tuple[str, ...] = ()
    #: Steps for the "training lowers the loss" check.
    train_steps: int = 12
    #: The synthetic dataset the checks use.
    synthetic = {"num_train": 16, "num_val": 4, "min_size": 96, "max_size": 160}

    # -- fixtures ---------------------------------------------------------------
    @pytest.fixture(scope="class")
    def registry(self):
        from ..plugins import Registry

        return Registry()

    @pytest.fixture(scope="class")
    def spec(self, registry):
        return registry.get_model(self.model)

    @pytest.fixture(scope="class")
    def data_root(self, tmp_path_factory):
        from ..data.synthetic import SynthSpec, ensure_synthetic

        return ensure_synthetic(SynthSpec(**self.synthetic), tmp_path_factory.mktemp("conf-data"))

    @pytest.fixture(scope="class")
    def config(self, spec):
        from ..config import resolve_config

        return resolve_config(spec, None, list(self.overrides))[1]

    @pytest.fixture(scope="class")
    def trained(self, registry, data_root, tmp_path_factory):
        """A short training run through core's runner: ``(work_dir, result)``."""
        from ..context import RunOptions
        from ..runner import run

        work = tmp_path_factory.mktemp("conf-train")
        sets = (*self.overrides, f"train.max_steps={self.train_steps}", "train.epochs=1000",
                "train.log_interval=1", "train.warmup_fps_steps=1")
        result = run(registry, RunOptions(model=self.model, task="train", data=str(data_root),
                                          device="cpu", work_dir=str(work), sets=sets,
                                          patches="off", progress=False))
        return work, result

    def build(self, spec, config, num_classes=3):
        from ..model import Detector
        from ..plugins import Registry

        model = Registry().hooks_for(spec).build_model(spec=spec, config=config,
                                                      num_classes=num_classes)
        assert isinstance(model, Detector), f"build_model returned {type(model).__name__}"
        return model

    # -- structure --------------------------------------------------------------
    def test_registered_and_discoverable(self, registry, spec):
        info = registry.plugins[spec.plugin]
        assert info.status == "ok", info.reason
        assert self.model in info.models
        assert {"register_models", "build_model"} <= set(info.hooks)

    def test_declares_hook_api_version(self, registry, spec):
        module = registry.pm.get_plugin(spec.plugin)
        assert getattr(module, "DETCORE_API_VERSION", None) == API_VERSION

    def test_pins_upstream_and_pin_is_satisfied(self, spec):
        from ..plugins import check_requirement

        assert spec.upstream, "declare the upstream packages the model pins (ModelSpec.upstream)"
        for pin in map(check_requirement, spec.upstream):
            assert pin["ok"], f"{pin['requirement']}: installed {pin['installed']}"

    def test_has_default_config(self, spec):
        assert spec.default_config in spec.configs

    def test_builds_on_cpu(self, spec, config):
        model = self.build(spec, config)
        assert sum(p.numel() for p in model.parameters()) > 0
        assert model.task_type == spec.task_type

    # -- patches ----------------------------------------------------------------
    def test_patches_apply_revert_and_are_equivalent(self, registry, spec, config):
        import torch

        from ..patching import Patch

        device = torch.device("cpu")
        applied = [p for group in registry.hooks_for(spec).apply_npu_patches(
            spec=spec, config=config, device=device) for p in group or []]
        try:
            assert all(isinstance(p, Patch) and p.applied for p in applied)
            assert all(type(p).__doc__ for p in applied), "each patch documents its limitation"
            patched = self._reference_outputs(spec, config)
        finally:
            for p in reversed(applied):
                p.revert()
        assert not any(p.applied for p in applied)
        unpatched = self._reference_outputs(spec, config)
        tolerance = max([p.tolerance for p in applied], default=0.0) or 1e-5
        for key in unpatched:
            assert torch.allclose(patched[key], unpatched[key], atol=tolerance, rtol=tolerance), key

    def _reference_outputs(self, spec, config) -> dict:
        """Losses on a fixed batch and eval scores of a fixed-seed model."""
        import torch

        torch.manual_seed(0)
        model = self.build(spec, config).eval()
        h, w = config["data"]["input_size"]
        images = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(1))
        target = {"boxes": torch.tensor([[8.0, 8.0, w / 2, h / 2]]), "labels": torch.tensor([1])}
        if spec.task_type == "segm":
            mask = torch.zeros(1, h, w, dtype=torch.uint8)
            mask[0, 8:h // 2, 8:w // 2] = 1
            target["masks"] = mask
        with torch.no_grad():
            scores = torch.cat([o["scores"].sort(descending=True).values[:10] for o in model(images)])
            model.train()
            losses = model(images, [target, target])
        return {"scores": scores, **{k: v.detach().float() for k, v in losses.items()}}

    # -- training, eval, export ---------------------------------------------------
    def test_train_step_gives_finite_losses(self, spec, config):
        import torch

        model = self.build(spec, config).train()
        h, w = config["data"]["input_size"]
        target = {"boxes": torch.tensor([[4.0, 4.0, w / 3, h / 3]]), "labels": torch.tensor([0])}
        if spec.task_type == "segm":
            target["masks"] = torch.zeros(1, h, w, dtype=torch.uint8)
            target["masks"][0, 4:h // 3, 4:w // 3] = 1
        losses = model(torch.rand(2, 3, h, w), [target, target])
        assert losses and all(torch.isfinite(v).all() for v in losses.values()), losses
        sum(losses.values()).backward()

    def test_short_training_lowers_loss(self, trained):
        work, _ = trained
        losses = [json.loads(line)["loss"] for line in (work / "metrics.jsonl").read_text().splitlines()]
        k = max(2, len(losses) // 4)
        assert sum(losses[-k:]) / k < sum(losses[:k]) / k, losses

    def test_result_json_follows_schema(self, trained):
        from ..result import validate_result

        _, result = trained
        assert validate_result(result) == []
        on_disk = json.loads((Path(trained[0]) / "result.json").read_text())
        assert on_disk["model"] == self.model

    def test_eval_returns_coco_metric_keys(self, spec, trained):
        _, result = trained
        prefixes = ("bbox", "segm") if spec.task_type == "segm" else ("bbox",)
        for prefix in prefixes:
            for name in ("mAP", "mAP_50", "mAP_75"):
                assert f"{prefix}_{name}" in result["metrics"]

    def test_export_forward_follows_the_contract(self, spec, config):
        import torch

        from ..export import check_contract

        model = self.build(spec, config).eval()
        h, w = config["data"]["input_size"]
        images = torch.rand(2, 3, h, w)
        with torch.no_grad():
            check_contract(model, images, model.export_forward(images))
        nodes = model.atc_out_nodes
        assert nodes is None or sorted(nodes) == sorted(model.export_output_names), nodes

    def test_export_runs_in_onnxruntime_and_matches(self, registry, spec, config, data_root,
                                                    trained, tmp_path):
        from ..context import RunOptions
        from ..runner import run

        work, _ = trained
        result = run(registry, RunOptions(
            model=self.model, task="export", data=str(data_root), device="cpu",
            work_dir=str(tmp_path), weights=str(work / "checkpoints" / "last.pt"),
            sets=self.overrides, patches="off", progress=False))
        assert Path(result["artifacts"]["onnx"]).is_file()  # verified within the model's tolerance
        diffs = {k: v for k, v in result["metrics"].items() if k.startswith("parity_max_abs_diff")}
        assert set(diffs) == {f"parity_max_abs_diff_{n}" for n in ("dets", "masks")
                              if n in self.build(spec, config).export_output_names}, diffs
