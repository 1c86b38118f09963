"""``--device npu`` end to end on a simulated NPU host, for every plugin (slow; the npu_sim lane).

Each CLI run is a subprocess with ``DETCORE_SIMULATE_NPU=1`` and a fake CANN home
(:func:`detcore.testing.npu_device.simulated_host_env`): ``import torch_npu`` there loads the
simulator, core resolves ``--device npu`` to ``torch.device("npu", 0)`` through ``npu_status``
and ``torch.npu.set_device``, the patches take their NPU branch (``npu_one_hot``,
``npu_nms_v4``, ``NpuFusedSGD``, ``npu_batch_nms``), AMP runs as ``torch.autocast("npu")``
with ``GradScaler("npu")``, ``--nproc 2`` joins an ``hccl`` group (gloo underneath), ``--format
om`` calls the fake ``atc`` (tests/fakes/bin, which checks the reference's flags) and
``--engine ais_bench`` the fake ais_bench session (tests/fakes/ais_bench, outputs by index).
"""
from __future__ import annotations

import json
import os

import pytest

from detcore.testing.cli import run_task
from detcore.testing.distributed import train_two_workers
from detcore.testing.npu_device import fake_cann_home, simulated_host_env

from .conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.npu_sim]

FAKES = REPO / "tests" / "fakes"

#: The smallest run of each plugin's model: a few images at 96-128 px, two steps.
DATA = ("data.synthetic.num_train=8", "data.synthetic.num_val=4", "data.synthetic.min_size=96",
        "data.synthetic.max_size=128", "data.workers=0", "train.max_steps=2", "train.epochs=1",
        "train.log_interval=1", "train.warmup_fps_steps=0", "eval.batch_size=4")
MODELS = {
    # sgd: the plugin's optimizer hook builds the fused_sgd patch's NpuFusedSGD
    "efficientdet-d0": (("--config", "tiny"), ("data.batch_size=2", "optimizer.name=sgd",
                                               "optimizer.lr=0.01")),
    "fcos": ((), ("data.input_size=[128,128]", "data.batch_size=2", "model.width=64",
                  "model.stacked_convs=1")),
    "solov2-light": ((), ("data.input_size=[96,96]", "data.batch_size=2", "model.base_channels=16",
                          "model.fpn_channels=64", "model.feat_channels=64",
                          "model.mask_feat_channels=32", "model.mask_out_channels=32",
                          "model.num_grids=[12,10,8,6,4]")),
    "retinanet": ((), ("data.input_size=[128,128]", "data.batch_size=2")),
}
#: The patches each model's run applies (``--patches on``; ``auto`` on an NPU applies the same).
PATCHES = {"efficientdet-d0": ["npu_one_hot", "fixed_size_nms", "fpn_combine_stack", "fused_sgd"],
           "fcos": ["fcos_static_postprocess"],
           "solov2-light": ["static_targets", "fixed_matrix_nms"],
           "retinanet": ["float32-focal-loss"]}


def args(model: str, *extra: str) -> list[str]:
    head, sets = MODELS[model]
    return [*head, *(a for s in (*DATA, *sets) for a in ("--set", s)), *extra]


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A simulated NPU host's environment, with the fake atc on PATH and the fake ais_bench
    importable, and a private dataset cache."""
    root = tmp_path_factory.mktemp("npu-host")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETCORE_")}
    env.update(DETCORE_CACHE=str(root / "cache"), DETCORE_LOG="WARNING", PYTHONWARNINGS="ignore",
               PATH=f"{FAKES / 'bin'}{os.pathsep}{env['PATH']}",
               PYTHONPATH=os.pathsep.join(p for p in (str(FAKES), env.get("PYTHONPATH")) if p))
    return simulated_host_env(fake_cann_home(root / "cann"), env)


def npu_run(host, model: str, task: str, work, *extra: str) -> dict:
    result = run_task(model, task, work, *args(model, *extra), env=host, device="npu", timeout=600)
    assert result["device"] == "npu:0", result["device"]
    assert result["versions"]["torch_npu"] == "0.0.0+detcore.npu_sim"
    return result


@pytest.mark.parametrize("model", list(MODELS))
def test_npu_workflow(model, host, tmp_path):
    """train (patches on, fp16 with a dynamic loss scale) -> eval (patches auto) -> export
    ``--format om`` -> infer with ais_bench, every run on the simulated ``npu:0``."""
    train = npu_run(host, model, "train", tmp_path / "train", "--patches", "on", "--amp", "fp16",
                    "--set", "train.eval_after=false")
    assert train["metrics"]["steps"] == 2 and train["metrics"]["final_loss"] > 0
    assert train["artifacts"]["patches"] == PATCHES[model]
    ckpt = train["artifacts"]["checkpoint"]

    ev = npu_run(host, model, "eval", tmp_path / "eval", "--weights", ckpt)
    assert ev["artifacts"]["patches"] == PATCHES[model]  # --patches auto: on, on an NPU
    assert 0.0 <= ev["metrics"]["bbox_mAP"] <= 1.0

    exp = npu_run(host, model, "export", tmp_path / "export", "--weights", ckpt, "--format", "om",
                  "--batch-size", "2", "--set", "export.soc_version=Ascend910B1")
    om = exp["artifacts"]["om"]
    assert "--soc_version=Ascend910B1" in exp["artifacts"]["atc_command"]
    order = json.loads(open(om + ".json").read())["outputs"]
    assert json.loads(open(om).read())["out_nodes"] == order  # what the fake atc was told

    inf = npu_run(host, model, "infer", tmp_path / "infer", "--engine", "ais_bench",
                  "--weights", om, "--batch-size", "2")
    assert inf["artifacts"]["engine"] == "ais_bench" and 0.0 <= inf["metrics"]["bbox_mAP"] <= 1.0


@pytest.mark.parametrize("model", list(MODELS))
def test_npu_two_workers_hccl(model, host, tmp_path):
    """``--nproc 2`` on the simulated host: torchrun workers on npu:0 and npu:1 in an hccl
    group (the simulator's hccl is gloo), DDP with ``device_ids``, patches applied by auto,
    fp16 with the reference's static loss scale."""
    result = train_two_workers(model, tmp_path / "ddp",
                               *args(model, "--amp", "fp16", "--loss-scale", "128",
                                     "--set", "train.eval_after=false"), env=host, device="npu")
    assert result["world_size"] == 2 and result["device"] == "npu:0"
    assert result["artifacts"]["patches"] == PATCHES[model]
    assert result["metrics"]["steps"] == 2
