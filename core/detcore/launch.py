"""``--nproc``/``--nnodes``: re-run the same command under torchrun (torch.distributed.run).

The launcher decides the device once (``auto`` is probed here, not again in every worker)
and hands each worker the command line with that device and without its own options.
"""
from __future__ import annotations

import subprocess
import sys

LAUNCHER_OPTIONS = {"--nproc", "--nnodes", "--node-rank", "--master-addr", "--master-port",
                    "--device"}


def strip_launcher_options(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in LAUNCHER_OPTIONS:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def torchrun_command(argv, device: str, nproc: int, nnodes: int, node_rank: int, addr: str,
                     port: int) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
           f"--nnodes={nnodes}", f"--node-rank={node_rank}", f"--master-addr={addr}",
           f"--master-port={port}", "-m", "detcore.cli"]
    return cmd + strip_launcher_options(argv) + ["--device", device]


def check_nproc(kind: str, nproc: int) -> None:
    """One worker per accelerator; on CPU, at most one worker per core. An accelerator that is
    not there at all is named with what is missing, as a single-process run names it."""
    from .devices import cuda_status, device_count, npu_status
    from .errors import MissingDependency, UserError

    available = device_count(kind)
    if available == 0 and kind in ("cuda", "npu"):
        why = (npu_status if kind == "npu" else cuda_status)()[1]
        raise MissingDependency(f"--device {kind}: {why}")
    if nproc > available:
        what = "CPU cores" if kind == "cpu" else f"{kind} devices"
        raise UserError(f"--nproc {nproc} is more than the {available} {what} present; "
                        f"use --nproc {available} or fewer")


def launch(device: str, nproc: int, nnodes: int, node_rank: int, addr: str, port: int) -> int:
    """Run this command under torchrun; a worker that dies ends the whole job, with a one-line summary."""
    from .devices import auto_device_name

    kind = auto_device_name() if device == "auto" else device
    check_nproc(kind, nproc)
    cmd = torchrun_command(sys.argv[1:], kind, nproc, nnodes, node_rank, addr, port)
    code = subprocess.call(cmd)
    if code != 0:
        print(f"detcore: error: the {nnodes * nproc}-worker job stopped (torchrun exit {code}); "
              f"the log above names the failed worker; the last complete checkpoint is kept, "
              f"continue with --resume", file=sys.stderr)
    return code
