"""A simulated Ascend NPU *device* for whole processes: what ``import torch_npu`` sets up, on CPU.

:mod:`detcore.testing.npu_sim` simulates the torch_npu *ops* the patches call. A run with
``--device npu`` needs more: the ``npu`` device type, the ``torch.npu`` device module core calls
(``device_count``, ``set_device``, ``synchronize``, ``is_available``, the amp hooks), and the
``hccl`` process-group backend. Real torch_npu sets these up when it is imported: it renames
torch's PrivateUse1 backend to ``npu`` (``torch.device("npu", 0)`` then exists), registers its
device module as ``torch.npu`` and registers ``hccl`` with ``torch.distributed``. This module
does the same at ``import torch_npu``, with the simulated ops, and decides how the simulated
device maps onto the CPU:

* **storage**: tensors created on, or moved to, ``npu:N`` are CPU tensors (the PrivateUse1
  factory kernels ``empty.memory_format``/``empty_strided`` allocate on the CPU). Core still
  holds ``torch.device("npu", N)`` and takes every ``device.type == "npu"`` branch (patches,
  autocast, GradScaler, DDP, hccl); the tensors themselves report ``cpu``.
* **autocast**: ``torch.autocast("npu", dtype)`` and ``torch.amp.GradScaler("npu")`` run as
  torch runs them for a PrivateUse1 device; since the tensors are CPU tensors, autocast changes
  no dtype here (fp16 numerics are among what only Ascend hardware shows).
* **hccl** is registered for ``npu`` and ``cpu`` tensors and creates a gloo process group.
* **DDP**: ``DistributedDataParallel(module, device_ids=[N])`` of a module whose parameters
  live on the CPU drops ``device_ids`` (torch refuses them for CPU modules; on the NPU they
  name the device the module is on).
* ``torch.npu.device_count()`` is :data:`DEVICE_COUNT` (an 8-NPU server); ``synchronize``
  checks its device argument and returns (the simulated kernels are synchronous).

It is switched on only by ``DETCORE_SIMULATE_NPU`` (``1`` or a product key, see
:func:`detcore.testing.npu_sim.from_env`) in the environment of a process that imports
detcore, so CLI subprocesses and their torchrun workers inherit it; ``detcore/__init__.py``
then calls :func:`install_import_hook`. The hook sits after every other import finder, so
a real torch_npu is always found first and never shadowed. What the device setup changes in
torch cannot be undone in a process (real torch_npu's cannot either): use it in subprocesses,
never from a test that shares its process with others.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading

from . import npu_sim

#: Simulated NPUs on this host (an Atlas 800 training server has 8).
DEVICE_COUNT = 8

#: Products whose NPUs support bfloat16 (the Atlas A2/A3 series and Ascend 950; the first
#: Ascend 910 and the 310P compute in fp16/fp32 only).
BF16_PRODUCTS = {"910b", "A3", "950"}

_lock = threading.Lock()
_device_ready = False


class _Loader(importlib.abc.Loader):
    """Creates the simulated ``torch_npu`` (:func:`npu_sim.install`) and sets up its device."""

    detcore_simulated = True  # what npu_sim.real_torch_npu_importable() looks for

    def __init__(self, product, error=None):
        self.product, self.error = product, error

    def create_module(self, spec):
        if self.error is not None:
            raise ImportError(self.error)
        return npu_sim.install(self.product)

    def exec_module(self, module):
        simulate_device(module, self.product)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, loader):
        self.loader = loader

    def find_spec(self, name, path=None, target=None):
        if name != "torch_npu":
            return None
        return importlib.machinery.ModuleSpec("torch_npu", self.loader, is_package=True)


def install_import_hook(environ=None) -> bool:
    """Make ``import torch_npu`` load the simulator when ``DETCORE_SIMULATE_NPU`` asks for it.

    Returns whether it was asked. An invalid value installs a hook whose import fails with
    the message (so ``--device npu`` says what is wrong instead of simulating nothing).
    """
    try:
        wanted, product = npu_sim.from_env(environ)
        error = None
    except ValueError as exc:
        wanted, product, error = True, None, str(exc)
    if not wanted:
        return False
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder(_Loader(product, error)))  # last: a real one wins
    return True


def simulate_device(torch_npu, product=None) -> None:
    """Set up the ``npu`` device for this process, as importing torch_npu does (once)."""
    global _device_ready
    import torch

    with _lock:
        if not _device_ready:
            # torch's own set-up of a Python PrivateUse1 backend: the rename, the device module,
            # the generated Tensor.npu()/is_npu methods, the C++ hooks (what
            # torch.accelerator and torch.distributed ask of the accelerator) and device guard
            from torch.utils.backend_registration import (
                _setup_privateuseone_for_python_backend)

            _setup_privateuseone_for_python_backend(rename="npu",
                                                    backend_module=_device_module(product),
                                                    hook=_hooks())
            _register_cpu_storage()
            _register_hccl()
            _ddp_without_device_ids_on_cpu()
            _device_ready = True
    torch_npu.npu = torch.npu


# ---------------------------------------------------------------------------------------
# torch.npu


def _device_module(product):
    """The simulated ``torch.npu`` (``torch_npu.npu``): the device calls core, torch and
    mmengine make, with the behaviour torch_npu documents for each (its ``torch_npu.npu``
    API list mirrors ``torch.cuda``'s)."""
    import torch

    mod = npu_sim._module("torch.npu")
    state = {"device": 0, "jit_compile": product in (None, "910", "310p")}

    def _index(device) -> int:
        if device is None:
            return state["device"]
        if isinstance(device, str):
            device = torch.device(device)
        if isinstance(device, torch.device):
            if device.type != "npu":
                raise ValueError(f"torch.npu: expected an npu device, got {device}")
            return state["device"] if device.index is None else device.index
        if isinstance(device, int) and not isinstance(device, bool):
            return device
        raise TypeError(f"torch.npu: a device is an int, 'npu:N' or torch.device, got {device!r}")

    def _checked(device) -> int:
        index = _index(device)
        if not 0 <= index < DEVICE_COUNT:
            raise RuntimeError(f"torch.npu (simulated): invalid device ordinal {index}; "
                               f"{DEVICE_COUNT} NPUs are simulated")
        return index

    def is_available() -> bool:
        return True

    def device_count() -> int:
        return DEVICE_COUNT

    def current_device() -> int:
        return state["device"]

    def set_device(device) -> None:
        state["device"] = _checked(device)

    def synchronize(device=None) -> None:
        """Wait for the device's queued kernels; the simulated ones ran synchronously."""
        _checked(device)

    def get_device_name(device=None) -> str:
        _checked(device)
        return f"{npu_sim.PRODUCTS.get(product, 'Ascend NPU')} (simulated by detcore.testing)"

    def set_compile_mode(jit_compile: bool = False) -> None:
        """``torch_npu.npu.set_compile_mode(jit_compile=bool)`` (mmengine calls it at import)."""
        if not isinstance(jit_compile, bool):
            raise TypeError(f"torch.npu.set_compile_mode: jit_compile must be a bool, got "
                            f"{type(jit_compile).__name__}")
        state["jit_compile"] = jit_compile

    def is_jit_compile_false() -> bool:
        return not state["jit_compile"]

    def get_amp_supported_dtype():
        """What ``torch.autocast("npu", dtype)`` may use (torch asks a PrivateUse1 module)."""
        return [torch.float16, torch.bfloat16] if is_bf16_supported() else [torch.float16]

    def is_bf16_supported() -> bool:
        return product is None or product in BF16_PRODUCTS

    def _is_in_bad_fork() -> bool:
        return False

    def manual_seed(seed) -> None:  # the simulated device draws from the CPU generator
        int(seed)

    def manual_seed_all(seed) -> None:
        int(seed)

    for fn in (is_available, device_count, current_device, set_device, synchronize,
               get_device_name, set_compile_mode, is_jit_compile_false, get_amp_supported_dtype,
               is_bf16_supported, _is_in_bad_fork, manual_seed, manual_seed_all):
        setattr(mod, fn.__name__, fn)
    return mod


def _hooks():
    """torch's C++ ``PrivateUse1HooksInterface``, answered in Python: the device is built
    and available (``torch.accelerator``, ``dist.barrier`` ask)."""
    import torch

    class SimulatedNpuHooks(torch._C._acc.PrivateUse1Hooks):
        def is_available(self) -> bool:
            return True

        def is_built(self) -> bool:
            return True

        def has_primary_context(self, device_index) -> bool:
            return 0 <= int(device_index) < DEVICE_COUNT

    return SimulatedNpuHooks()


# ---------------------------------------------------------------------------------------
# where the simulated device's tensors live, hccl, DDP

_libraries = []  # torch.library registrations live as long as their Library object


def _register_cpu_storage() -> None:
    """Tensors created on ``npu`` are allocated on the CPU: every factory (``zeros``,
    ``arange``, ``tensor(..., device=)``, ``.to("npu")``) allocates through these two."""
    import torch

    lib = torch.library.Library("aten", "IMPL")

    def empty(size, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
        return torch.empty(size, dtype=dtype, layout=layout, device="cpu",
                           memory_format=memory_format)

    def empty_strided(size, stride, dtype=None, layout=None, device=None, pin_memory=None):
        return torch.empty_strided(size, stride, dtype=dtype, layout=layout, device="cpu")

    lib.impl("empty.memory_format", empty, "PrivateUse1")
    lib.impl("empty_strided", empty_strided, "PrivateUse1")
    _libraries.append(lib)


def _register_hccl() -> None:
    """``init_process_group("hccl")`` creates a gloo group (for npu and, as the simulated
    npu's tensors are CPU tensors, cpu collectives)."""
    import torch.distributed as dist

    if not dist.is_available() or "hccl" in dist.Backend.backend_list:
        return

    def create_gloo(store, rank, world_size, timeout):
        return dist.ProcessGroupGloo(store, rank, world_size, timeout)

    dist.Backend.register_backend("hccl", create_gloo, devices=["npu", "cpu"])


def _ddp_without_device_ids_on_cpu() -> None:
    """``DistributedDataParallel(module, device_ids=[N])``: torch accepts device ids only for
    accelerator modules; the simulated npu's parameters are CPU tensors, so they are dropped."""
    import functools

    from torch.nn.parallel import DistributedDataParallel

    original = DistributedDataParallel.__init__

    @functools.wraps(original)
    def __init__(self, module, device_ids=None, output_device=None, *args, **kwargs):
        if device_ids and all(p.device.type == "cpu" for p in module.parameters()):
            device_ids = output_device = None
        original(self, module, device_ids, output_device, *args, **kwargs)

    DistributedDataParallel.__init__ = __init__


# ---------------------------------------------------------------------------------------
# for tests: the environment of a simulated NPU host


def fake_cann_home(path, version: str = "8.0.RC3", arch: str = "x86_64"):
    """A directory standing for a CANN toolkit (``ASCEND_HOME_PATH``): only the install record
    ``<arch>-linux/ascend_toolkit_install.info`` that names its version. Returns the path."""
    from pathlib import Path

    record = Path(path) / f"{arch}-linux" / "ascend_toolkit_install.info"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(f"package_name=Ascend-cann-toolkit\nversion={version}\narch={arch}\n"
                      f"os=linux\npath={path}\n")
    return Path(path)


def simulated_host_env(cann_home, base=None, product: str = "1") -> dict:
    """``base`` (default ``os.environ``) plus what makes a subprocess a simulated NPU host:
    ``DETCORE_SIMULATE_NPU`` (``1`` or a product key) and ``ASCEND_HOME_PATH`` set to
    ``cann_home`` (see :func:`fake_cann_home`), as CANN's ``set_env.sh`` sets it."""
    import os

    env = dict(os.environ if base is None else base)
    env.update({npu_sim.ENV: product, "ASCEND_HOME_PATH": str(cann_home)})
    return env
