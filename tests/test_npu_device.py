"""The simulated NPU device (``detcore.testing.npu_device``): what ``import torch_npu`` sets up
in a process started with ``DETCORE_SIMULATE_NPU``, used through core's own device code; never
active unasked, never in front of a real torch_npu.

Each check runs in a subprocess: the device set-up (torch's PrivateUse1 backend renamed to
``npu``) cannot be undone in a process, as with the real torch_npu.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from detcore.testing.npu_device import fake_cann_home, simulated_host_env

pytestmark = pytest.mark.npu_sim


def python(code: str, env: dict) -> dict:
    """Run ``code`` (which prints one JSON line last) under ``env``; return that JSON."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DETCORE_") and k not in ("ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME",
                                                         "ASCEND_OPP_PATH")}
    env.update(extra)
    return env


def test_core_resolves_and_drives_the_simulated_npu(tmp_path):
    """``resolve_device("npu", 3)`` through ``npu_status`` and ``torch.npu.set_device``; the
    device's tensors are CPU tensors; synchronize, amp, hccl and CANN's version as core sees them."""
    env = simulated_host_env(fake_cann_home(tmp_path / "cann", version="8.0.RC3"), clean_env())
    out = python("""
        import json
        import torch
        import torch.distributed as dist
        from detcore.devices import (cann_version, device_count, npu_status, resolve_device,
                                     synchronize, torch_npu_version)
        from detcore.train.amp import autocast, make_scaler

        ok, why = npu_status()
        device = resolve_device("npu", 3)
        x = torch.arange(4, device=device)
        synchronize(device)
        with autocast(device, "fp16"):
            amp_on = torch.is_autocast_enabled("npu")
            amp_dtype = str(torch.get_autocast_dtype("npu"))
        scaler = make_scaler(device, "fp16", "dynamic")
        try:
            torch.npu.set_device(8)
            bad = None
        except RuntimeError as exc:
            bad = str(exc)
        print(json.dumps(dict(ok=ok, why=why, device=str(device), current=torch.npu.current_device(),
                              storage=str(x.device), count=device_count("npu"),
                              version=torch_npu_version(), cann=cann_version(), amp_on=amp_on,
                              amp_dtype=amp_dtype, scaler=scaler._device, bad=bad,
                              hccl="hccl" in dist.Backend.backend_list,
                              accelerator=str(torch.accelerator.current_accelerator()))))
    """, env)
    assert out["ok"] and out["why"].startswith("torch_npu with CANN at")
    assert (out["device"], out["current"], out["storage"]) == ("npu:3", 3, "cpu")
    assert out["count"] == 8 and out["cann"] == "8.0.RC3"
    assert out["version"] == "0.0.0+detcore.npu_sim"
    assert out["amp_on"] and out["amp_dtype"] == "torch.float16" and out["scaler"] == "npu"
    assert "invalid device ordinal 8" in out["bad"]
    assert out["hccl"] and out["accelerator"] == "npu"


def test_products_and_the_state_of_a_host_without_cann(tmp_path):
    """A product key picks the simulated chip; without CANN, torch_npu is not even imported
    (core's rule), and its version comes from the installed distribution: none here."""
    code = """
        import json
        import torch
        from detcore.devices import npu_status, resolve_device, torch_npu_version
        ok, why = npu_status()
        name = bf16 = None
        if ok:
            resolve_device("npu")
            name, bf16 = torch.npu.get_device_name(), torch.npu.is_bf16_supported()
        print(json.dumps(dict(ok=ok, why=why, name=name, bf16=bf16, version=torch_npu_version())))
    """
    cann = fake_cann_home(tmp_path / "cann")
    a2 = python(code, simulated_host_env(cann, clean_env(), product="910b"))
    assert a2["name"].startswith("Atlas A2 training series") and a2["bf16"] is True
    inference = python(code, simulated_host_env(cann, clean_env(), product="310p"))
    assert inference["bf16"] is False
    no_cann = python(code, clean_env(DETCORE_SIMULATE_NPU="1"))
    if os.path.exists("/usr/local/Ascend/ascend-toolkit"):
        pytest.skip("a CANN toolkit is installed here")
    assert not no_cann["ok"] and "CANN is not" in no_cann["why"] and no_cann["version"] is None


def test_never_active_unasked_and_never_in_front_of_a_real_torch_npu(tmp_path):
    code = """
        import importlib.util, json
        import detcore, torch
        spec = importlib.util.find_spec("torch_npu")
        try:
            torch.device("npu", 0)
            npu_device = True
        except RuntimeError:
            npu_device = False
        real = None
        if spec is not None:
            from detcore.devices import npu_status
            real = npu_status()[1]
        print(json.dumps(dict(found=spec is not None, npu_device=npu_device, real=real)))
    """
    for value in (None, "", "0"):
        env = clean_env() if value is None else clean_env(DETCORE_SIMULATE_NPU=value)
        out = python(code, env)
        assert out == {"found": False, "npu_device": False, "real": None}, value
    # a real torch_npu (here a stand-in package that fails to load) is found first
    site = tmp_path / "site" / "torch_npu"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("raise ImportError('the real torch_npu')\n")
    env = simulated_host_env(fake_cann_home(tmp_path / "cann"), clean_env())
    env["PYTHONPATH"] = os.pathsep.join([str(site.parent), env.get("PYTHONPATH", "")])
    out = python(code, env)
    assert out["found"] and "the real torch_npu" in out["real"]
    # an invalid value simulates nothing and says why, through --device npu's own message
    bad = python(code, simulated_host_env(fake_cann_home(tmp_path / "cann"), clean_env(),
                                          product="yes"))
    assert "DETCORE_SIMULATE_NPU='yes'" in bad["real"] and not bad["npu_device"]
