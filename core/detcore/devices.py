"""Device backends: cpu, cuda, and Ascend npu through torch_npu (optional extra)."""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from .errors import MissingDependency

CHOICES = ("auto", "cpu", "cuda", "npu")
CANN_ENV = ("ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME", "ASCEND_OPP_PATH")
CANN_DEFAULT = Path("/usr/local/Ascend/ascend-toolkit")


def cann_home() -> str | None:
    """Where CANN is installed, if it is (env set by set_env.sh, or the default path)."""
    for var in CANN_ENV:
        if os.environ.get(var):
            return os.environ[var]
    return str(CANN_DEFAULT) if CANN_DEFAULT.exists() else None


def cann_version(home: str | None = None) -> str | None:
    """The CANN toolkit's version, from the install record it writes beside itself
    (``<home>/<arch>-linux/ascend_toolkit_install.info``, line ``version=8.0.0``; Ascend's
    installation guide, "File Paths"). ``home``: :func:`cann_home` by default."""
    home = home or cann_home()
    if home is None:
        return None
    for root in (Path(home), Path(home) / "latest"):
        for info in sorted(root.glob("*-linux/ascend_toolkit_install.info")):
            for line in info.read_text(errors="replace").splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "version" and value.strip():
                    return value.strip()
    return None


def torch_npu_installed() -> bool:
    return importlib.util.find_spec("torch_npu") is not None


def torch_npu_version() -> str | None:
    """The version of the torch_npu this process loaded (what it says of itself), else of the
    installed distribution; None when there is neither."""
    import sys
    from importlib import metadata

    loaded = sys.modules.get("torch_npu")
    if loaded is not None and getattr(loaded, "__version__", None):
        return str(loaded.__version__)
    try:
        return metadata.version("torch_npu")
    except metadata.PackageNotFoundError:
        return None


def npu_status() -> tuple[bool, str]:
    """(usable, why) for the NPU backend. Imports torch_npu only when CANN is present."""
    if not torch_npu_installed():
        return False, "torch_npu is not installed (pip install 'detcore[npu]' on a host with CANN)"
    if cann_home() is None:
        return False, "torch_npu is installed but CANN is not (source set_env.sh from the CANN toolkit)"
    try:
        import torch_npu  # noqa: F401
        import torch

        if torch.npu.device_count() < 1:
            return False, "torch_npu imported but no NPU device is visible"
    except Exception as exc:
        return False, f"torch_npu failed to load: {exc}"
    return True, "torch_npu with CANN at " + cann_home()


def cuda_status() -> tuple[bool, str]:
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible to torch"
    return True, f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"


def auto_device_name() -> str:
    if torch_npu_installed() and npu_status()[0]:
        return "npu"
    if cuda_status()[0]:
        return "cuda"
    return "cpu"


def resolve_device(name: str, local_rank: int = 0):
    """``auto|cpu|cuda|npu`` -> ``torch.device``, or a one-line error naming what is missing."""
    import torch

    if name == "auto":
        name = auto_device_name()
    if name == "npu":
        ok, why = npu_status()
        if not ok:
            raise MissingDependency(f"--device npu: {why}")
        torch.npu.set_device(local_rank)
        return torch.device("npu", local_rank)
    if name == "cuda":
        ok, why = cuda_status()
        if not ok:
            raise MissingDependency(f"--device cuda: {why}; use --device cpu or auto")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def synchronize(device) -> None:
    """Wait for the device's queued kernels (CUDA and NPU run asynchronously): before a clock read."""
    import torch

    if device.type in ("cuda", "npu"):
        getattr(torch, device.type).synchronize(device)


def device_count(kind: str) -> int:
    import torch

    if kind == "cuda":
        return torch.cuda.device_count()
    if kind == "npu":
        return torch.npu.device_count() if npu_status()[0] else 0
    return os.cpu_count() or 1


def which(tool: str) -> str | None:
    return shutil.which(tool)
