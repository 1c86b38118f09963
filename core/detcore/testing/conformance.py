"""The checks every detcore plugin model must pass, as a pytest class to subclass.

Usage in a plugin's tests::

    from detcore.testing import ConformanceSuite

    class TestMyModel(ConformanceSuite):
        model = "my-model"
        overrides = ("data.input_size=[128,128]", "data.batch_size=2")

Each check runs on CPU against a small synthetic dataset and the real model; the
short training, eval and export run through core's own code paths. The learning checks
(:mod:`detcore.testing.learning`) train the model until it memorises two images and compare
what it predicts with what it was taught: labels, boxes in canvas pixels, no internal resize.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from .. import API_VERSION
from .learning import (CLASSES, Memorised, memorisable_batch, memorise, mistaught,
                       resize_problem)


class ConformanceSuite:
    #: The ``--model`` name to check.
    model: str = ""
    #: ``--set`` overrides that make the checks small (input size, batch, widths...).
    overrides: tuple[str, ...] = ()
    #: Steps for the "training lowers the loss" check.
    train_steps: int = 12
    #: The synthetic dataset the checks use.
    synthetic = {"num_train": 16, "num_val": 4, "min_size": 96, "max_size": 160}
    #: The learning check (:mod:`detcore.testing.learning`): AdamW steps and rate that memorise
    #: its two images, and how far (canvas pixels, any coordinate) a taught box may come back.
    learn_steps: int = 40
    learn_lr: float = 1e-3
    learn_tolerance: float = 6.0
    #: ``--set`` items added for the learning check only, e.g. turning off stochastic depth
    #: (a block dropped at random each step keeps a few dozen steps from memorising anything).
    learn_overrides: tuple[str, ...] = ()
    #: Keys of the named configs left out of ``ModelSpec.config_keys`` on purpose (say why in a
    #: comment); every other key must be core's or declared, so a run checks its value.
    undeclared_keys: tuple[str, ...] = ()

    # -- fixtures ---------------------------------------------------------------
    # Class-scoped fixtures are classmethods: they run once per class, so they must not
    # depend on (or set) the per-test instance.
    @pytest.fixture(scope="class")
    @classmethod
    def registry(cls):
        from ..plugins import Registry

        return Registry()

    @pytest.fixture(scope="class")
    @classmethod
    def spec(cls, registry):
        return registry.get_model(cls.model)

    @pytest.fixture(scope="class")
    @classmethod
    def data_root(cls, tmp_path_factory):
        from ..data.synthetic import SynthSpec, ensure_synthetic

        return ensure_synthetic(SynthSpec(**cls.synthetic), tmp_path_factory.mktemp("conf-data"))

    @pytest.fixture(scope="class")
    @classmethod
    def config(cls, spec):
        from ..config import resolve_config

        return resolve_config(spec, None, list(cls.overrides))[1]

    @pytest.fixture(scope="class")
    @classmethod
    def trained(cls, registry, data_root, tmp_path_factory):
        """A short training run through core's runner: ``(work_dir, result)``."""
        from ..context import RunOptions
        from ..runner import run

        work = tmp_path_factory.mktemp("conf-train")
        sets = (*cls.overrides, f"train.max_steps={cls.train_steps}", "train.epochs=1000",
                "train.log_interval=1", "train.warmup_fps_steps=1")
        result = run(registry, RunOptions(model=cls.model, task="train", data=str(data_root),
                                          device="cpu", work_dir=str(work), sets=sets,
                                          patches="off", progress=False))
        return work, result

    @pytest.fixture(scope="class")
    @classmethod
    def memorised(cls, spec):
        """The model after the learning check's training on its two images (a model that does
        not run at the canvas size fails here, before training at the size it resizes to)."""
        import torch

        from ..config import resolve_config

        config = resolve_config(spec, None, [*cls.overrides, *cls.learn_overrides])[1]
        torch.manual_seed(0)
        model = cls.build(spec, config)
        images, targets = memorisable_batch(config["data"]["input_size"], CLASSES, spec.task_type)
        problem = resize_problem(model, images)
        if problem:
            pytest.fail(f"{problem} (the learning check does not train at that size)",
                        pytrace=False)
        torch.manual_seed(0)
        losses = memorise(model, images, targets, cls.learn_steps, cls.learn_lr)
        with torch.no_grad():
            outputs = model.eval()(images)
        return Memorised(model, config, images, targets, losses, outputs)

    @classmethod
    def build(cls, spec, config, num_classes=CLASSES):
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

    def test_entry_point_is_import_light(self, registry, spec):
        """``detcore plugins`` and ``detcore --help`` import every entry point: torch and the
        pinned upstream are imported inside the hooks, not at module level."""
        from .imports import modules_loaded_by, upstream_modules

        module = registry.pm.get_plugin(spec.plugin).__name__
        heavy = modules_loaded_by(f"import {module}", {"torch", *upstream_modules(spec.upstream)})
        assert not heavy, (f"importing {module} imports {', '.join(heavy)}; import them inside "
                           f"the hook bodies")

    def test_declares_its_config_keys(self, spec):
        """Every key of every named config is core's or declared in ``ModelSpec.config_keys``
        (so a run checks its type and range), and every declared key is in every named config
        (so ``--set`` reaches it)."""
        from ..config import resolve_config
        from ..config_schema import keys_for

        keys = keys_for(spec)
        for name in spec.configs:
            found = set(_leaves(resolve_config(spec, name, [])[1], keys))
            undeclared = sorted(found - set(keys) - set(self.undeclared_keys))
            assert not undeclared, (f"config {name!r} has keys {', '.join(undeclared)} that "
                                    f"ModelSpec.config_keys does not declare")
            missing = sorted(set(spec.config_keys) - found)
            assert not missing, f"config {name!r} lacks declared keys {', '.join(missing)}"

    def test_builds_on_cpu(self, spec, config):
        model = self.build(spec, config)
        assert sum(p.numel() for p in model.parameters()) > 0
        assert model.task_type == spec.task_type

    # -- patches ----------------------------------------------------------------
    def test_patches_apply_revert_and_are_equivalent(self, registry, spec, config, memorised):
        """The memorised model, patched and not, on its images: the same losses and scores. Its
        scores are above the eval threshold, so post-processing patches have work to do."""
        import torch

        from ..patching import Patch

        device = torch.device("cpu")
        applied = [p for group in registry.hooks_for(spec).apply_npu_patches(
            spec=spec, config=config, device=device) for p in group or []]
        try:
            assert all(isinstance(p, Patch) and p.applied for p in applied)
            assert all(type(p).__doc__ for p in applied), "each patch documents its limitation"
            patched = self._reference_outputs(spec, memorised)
        finally:
            for p in reversed(applied):
                p.revert()
        assert not any(p.applied for p in applied)
        unpatched = self._reference_outputs(spec, memorised)
        threshold = float(config["eval"]["score_threshold"])
        assert int((unpatched["scores"] > threshold).sum()) >= len(memorised.targets), (
            f"the memorised model scores {unpatched['scores'].tolist()}: too few above the "
            f"threshold {threshold} for post-processing to be compared")
        tolerance = max([p.tolerance for p in applied], default=0.0) or 1e-5
        for key in unpatched:
            assert torch.allclose(patched[key], unpatched[key], atol=tolerance, rtol=tolerance), key

    def _reference_outputs(self, spec, memorised) -> dict:
        """Eval scores and losses of the memorised weights on the memorised images."""
        import torch

        torch.manual_seed(0)
        model = self.build(spec, memorised.config)
        model.load_state_dict(memorised.model.state_dict())
        images, targets = memorised.images, memorised.targets
        with torch.no_grad():
            outputs = model.eval()(images)
            scores = torch.cat([o["scores"].sort(descending=True).values[:10] for o in outputs])
            torch.manual_seed(0)  # two-stage detectors sample proposals at random in training
            losses = model.train()(images, targets)
        return {"scores": scores, **{k: v.detach().float() for k, v in losses.items()}}

    @staticmethod
    def _fixed_batch(spec, config):
        """Two fixed images and their targets (one box, and a mask for ``segm`` models)."""
        import torch

        h, w = config["data"]["input_size"]
        images = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(1))
        target = {"boxes": torch.tensor([[8.0, 8.0, w / 2, h / 2]]), "labels": torch.tensor([1])}
        if spec.task_type == "segm":
            mask = torch.zeros(1, h, w, dtype=torch.uint8)
            mask[0, 8:h // 2, 8:w // 2] = 1
            target["masks"] = mask
        return images, [target, target]

    @staticmethod
    def _patch_classes(registry, spec) -> list:
        return [cls for group in registry.hooks_for(spec).npu_patches(spec=spec)
                for cls in group or []]

    def test_patches_are_listed_and_prove_their_upstream(self, registry, spec, config):
        """``npu_patches`` lists what ``apply_npu_patches`` applies; each patch declares what it
        replaces, and its fingerprints are those of the pinned upstream installed here."""
        import torch

        from .patch_checks import stale_fingerprints

        classes = self._patch_classes(registry, spec)
        applied = [p for group in registry.hooks_for(spec).apply_npu_patches(
            spec=spec, config=config, device=torch.device("cpu")) for p in group or []]
        for p in reversed(applied):
            p.revert()
        assert [type(p) for p in applied] == classes, "npu_patches must list what " \
            "apply_npu_patches applies, in order"
        problems = stale_fingerprints(classes, spec.upstream)
        assert not problems, "\n".join(problems)

    def test_patches_call_the_torch_npu_ops_they_declare(self, registry, spec, config):
        """Each patch's NPU branch, under the torch_npu simulator, through an evaluation, a
        training step and an SGD step: it calls exactly the torch_npu ops in ``npu_ops``."""
        import copy

        from .npu_sim import npu_device, real_torch_npu_importable, simulated_torch_npu
        from .patch_checks import recording_torch_npu_calls

        if real_torch_npu_importable():
            pytest.skip("a real torch_npu is installed: the simulator never shadows it")
        sgd = copy.deepcopy(config)
        sgd["optimizer"]["name"] = "sgd"
        for cls in self._patch_classes(registry, spec):
            with simulated_torch_npu() as torch_npu, recording_torch_npu_calls(torch_npu) as called:
                with cls(npu_device()):
                    self._training_and_eval_step(registry, spec, sgd)
            assert called == set(cls.npu_ops), (f"patch {cls.name}: its NPU branch called "
                                                f"{sorted(called)}, it declares npu_ops="
                                                f"{cls.npu_ops}")

    def _training_and_eval_step(self, registry, spec, config) -> None:
        import torch

        from ..train.optim import default_optimizer

        torch.manual_seed(0)
        model = self.build(spec, config).eval()
        images, targets = self._fixed_batch(spec, config)
        with torch.no_grad():
            model(images)
        model.train()
        optimizer = (registry.hooks_for(spec).build_optimizer(spec=spec, config=config,
                                                             model=model, world_size=1)
                     or default_optimizer(model, config, 1))  # as core's trainer builds it
        optimizer.zero_grad()
        sum(model(images, targets).values()).backward()
        optimizer.step()

    # -- learning ------------------------------------------------------------------
    def test_runs_at_the_canvas_size(self, spec, config):
        """No internal resize: the convolutions see the canvas (or less)."""
        import torch

        torch.manual_seed(0)
        images, _ = memorisable_batch(config["data"]["input_size"], CLASSES, spec.task_type)
        problem = resize_problem(self.build(spec, config), images)
        assert problem is None, problem

    def test_learns_every_class_at_its_place(self, memorised):
        """After memorising two images, each object comes back with the 0-based label it was
        taught, its box in canvas pixels within ``learn_tolerance``."""
        losses = memorised.losses
        k = max(1, len(losses) // 4)
        late = sum(losses[-k:]) / k
        assert late < 0.5 * losses[0], (
            f"{len(losses)} steps on two images took the loss only from {losses[0]:.3g} to "
            f"{late:.3g} (mean of the last {k}); the model does not memorise them (raise "
            f"learn_steps or learn_lr if it needs more to learn)")
        problems = mistaught(memorised.outputs, memorised.targets, CLASSES, self.learn_tolerance)
        assert not problems, "\n".join(problems)

    def test_labels_stay_in_range(self, memorised):
        """Labels in ``[0, num_classes)`` from ``forward`` and ``export_forward``; ``-1`` only in
        ``export_forward``'s empty slots (score 0), and every empty slot ``-1``."""
        import torch

        for out in memorised.outputs:
            labels = out["labels"]
            assert bool(((labels >= 0) & (labels < CLASSES)).all()), (
                f"forward returned labels {sorted(set(labels.tolist()))}; they must be in "
                f"[0, {CLASSES})")
        with torch.no_grad():
            dets, labels = memorised.model.eval().export_forward(memorised.images)[:2]
        filled = dets[..., 4] > 0
        assert bool(filled.any()), "export_forward found nothing on the memorised images"
        found = labels[filled]
        assert bool(((found >= 0) & (found < CLASSES)).all()), (
            f"export_forward labels {sorted(set(found.tolist()))} in filled slots; they must be "
            f"in [0, {CLASSES})")
        assert bool((labels[~filled] == -1).all()), (
            f"export_forward's empty slots (score 0) have labels "
            f"{sorted(set(labels[~filled].tolist()))}; they must be -1")

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


def _leaves(config: dict, keys: dict, prefix: str = ""):
    """The dotted keys of ``config``'s values: nested dicts are walked, unless a key of ``keys``
    names the dict itself."""
    for name, value in config.items():
        dotted = prefix + str(name)
        if isinstance(value, dict) and dotted not in keys:
            yield from _leaves(value, keys, dotted + ".")
        else:
            yield dotted
