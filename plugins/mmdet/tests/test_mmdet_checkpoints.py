"""mmengine / mmcv checkpoints under core's ``weights_only`` loader with the family's globals.

Checkpoints are made with mmengine's own ``save_checkpoint`` and ``MessageHub`` (what its
``CheckpointHook`` saves); the slow CLI round trips through a real ``Runner`` are the plugins'
(``test_*_upstream.py``).
"""
from __future__ import annotations

import collections
import io
import subprocess

import numpy as np
import pytest
import torch

from detcore.checkpoint import load_checkpoint, load_model_weights
from detcore.errors import UserError
from detcore.testing.imports import modules_loaded_by
from detcore_mmdet import CHECKPOINT_GLOBALS

from test_mmdet_adapter import tiny_fcos


def message_hub_state():
    """A ``MessageHub`` as a Runner leaves it after logging: ``HistoryBuffer`` scalars (numpy
    float64 values, int64 counts) and numpy runtime info (``eta``)."""
    from mmengine.logging import MessageHub

    hub = MessageHub.get_instance("detcore-test-checkpoint")
    for step in range(3):
        hub.update_scalar("train/loss", 1.0 / (step + 1))
        hub.update_scalar("train/lr", 0.01)
    hub.update_info("eta", np.float64(12.5))
    hub.update_info("iter", 3)
    return hub.state_dict()


def mmengine_checkpoint(path, model=None):
    """What mmengine's ``Runner.save_checkpoint`` writes, through its ``save_checkpoint``."""
    from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu

    model = model or tiny_fcos()
    optimizer = torch.optim.SGD(model.model.parameters(), lr=0.01, momentum=0.9)
    model.model.zero_grad()
    sum(p.sum() for p in model.model.parameters()).backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[8, 11])
    checkpoint = {
        "meta": {"epoch": 1, "iter": 3, "cfg": "model = dict(type='FCOS')", "seed": 0,
                 "experiment_name": "x", "time": "20240101_000000", "mmengine_version": "0.10.7",
                 "dataset_meta": {"classes": ("a", "b", "c"), "palette": [(220, 20, 60)] * 3}},
        "state_dict": weights_to_cpu(model.model.state_dict()),
        "message_hub": message_hub_state(),
        "optimizer": optimizer.state_dict(),
        "param_schedulers": [scheduler.state_dict()],
    }
    save_checkpoint(checkpoint, str(path))
    return path, model


def numpy1_copy(path, out):
    """``path`` as numpy 1.x pickles it (``numpy.core.multiarray.*``), in torch's legacy format
    (mmdet 2.x era files are both)."""
    full = torch.load(path, weights_only=False)
    buf = io.BytesIO()
    torch.save(full, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    assert b"numpy._core.multiarray\n" in data
    out.write_bytes(data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    return out


def test_globals_resolve_and_the_package_stays_light():
    from detcore.checkpoint import _resolve

    assert all(_resolve(name) is not None for name in CHECKPOINT_GLOBALS)
    assert modules_loaded_by("import detcore_mmdet as m; m.CHECKPOINT_GLOBALS",
                             ("torch", "numpy", "mmengine")) == []


def test_plugins_declare_the_globals():
    from detcore.plugins import Registry

    registry = Registry()
    for name in ("fcos", "solov2", "solov2-light"):
        try:
            spec = registry.get_model(name)
        except Exception:  # that plugin is not installed here
            continue
        assert spec.checkpoint_globals == CHECKPOINT_GLOBALS, name


def test_mmengine_checkpoint_loads_with_the_globals_only(tmp_path):
    path, model = mmengine_checkpoint(tmp_path / "epoch_1.pth")
    with pytest.raises(UserError, match="refused.*HistoryBuffer"):
        load_checkpoint(path)  # core's defaults alone: refused, as weights_only refuses it
    ckpt = load_checkpoint(path, CHECKPOINT_GLOBALS)
    hub = ckpt["message_hub"]
    assert hub["log_scalars"]["train/loss"].mean() == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert hub["log_scalars"]["train/loss"].statistics("current") == pytest.approx(1 / 3)
    assert hub["runtime_info"]["eta"] == 12.5
    assert ckpt["param_schedulers"][0]["milestones"] == collections.Counter({8: 1, 11: 1})
    target = tiny_fcos(seed=5)
    assert load_model_weights(target, ckpt, str(path), finetune=False) == []
    for key, value in model.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_numpy1_pickles_load(tmp_path):
    path, _ = mmengine_checkpoint(tmp_path / "epoch_1.pth")
    old = numpy1_copy(path, tmp_path / "numpy1.pth")
    ckpt = load_checkpoint(old, CHECKPOINT_GLOBALS)
    assert ckpt["message_hub"]["runtime_info"]["eta"] == 12.5
    assert isinstance(ckpt["message_hub"]["log_scalars"]["train/lr"]._log_history, np.ndarray)


class _Getattr:
    """Pickles as ``getattr(owner, name)``: the call ``builtins.getattr`` would make."""

    def __init__(self, owner, name):
        self.owner, self.name = owner, name

    def __reduce__(self):
        return getattr, (self.owner, self.name)


@pytest.mark.parametrize("owner,name", [(np.ndarray, "tofile"), ("HistoryBuffer", "__init__"),
                                        ("HistoryBuffer", "_statistics_methods"),
                                        (collections.OrderedDict, "fromkeys")])
def test_getattr_is_refused_beyond_history_buffer_methods(tmp_path, owner, name):
    from mmengine.logging import HistoryBuffer

    owner = HistoryBuffer if owner == "HistoryBuffer" else owner
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "x": _Getattr(owner, name)}, path)
    with pytest.raises(UserError, match="refused.*GLOBAL builtins.getattr"):
        load_checkpoint(path, CHECKPOINT_GLOBALS)


def test_malicious_pickle_is_still_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (subprocess.call, (["true"],))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": Evil()}, path)
    with pytest.raises(UserError, match="refused"):
        load_checkpoint(path, CHECKPOINT_GLOBALS)


def test_partial_mmengine_checkpoint_fails_naming_the_keys(tmp_path):
    path, _ = mmengine_checkpoint(tmp_path / "epoch_1.pth")
    ckpt = load_checkpoint(path, CHECKPOINT_GLOBALS)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items()
                          if not k.startswith("bbox_head.")}
    with pytest.raises(UserError, match=r"tensors missing \(first: model\.bbox_head\."):
        load_model_weights(tiny_fcos(), ckpt, str(path), finetune=False)


def test_published_and_mmcv1_layouts_load(tmp_path):
    from detcore_mmdet.upstream import mmdet_meta, save_mmcv1, save_published

    model = tiny_fcos(seed=3)
    state = model.model.state_dict()
    optimizer = torch.optim.SGD(model.model.parameters(), lr=0.01, momentum=0.9).state_dict()
    for path in (save_published(state, tmp_path / "published.pth", mmdet_meta(("a", "b", "c"))),
                 save_mmcv1(state, tmp_path / "mmcv1.pth", ("a", "b", "c"), optimizer=optimizer)):
        ckpt = load_checkpoint(path, CHECKPOINT_GLOBALS)
        target = tiny_fcos(seed=4)
        load_model_weights(target, ckpt, str(path), finetune=False)
        for key, value in model.state_dict().items():
            assert torch.equal(target.state_dict()[key], value), (path.name, key)


def test_rename_prefix():
    from detcore_mmdet.adapter import rename_prefix

    renames = (("a.b.", "x."), ("a.", "y."))
    assert rename_prefix("a.b.c", renames) == "x.c"
    assert rename_prefix("a.c", renames) == "y.c"
    assert rename_prefix("b.a.c", renames) == "b.a.c"
