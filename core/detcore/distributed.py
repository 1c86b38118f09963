"""torch.distributed for runs launched by ``torchrun`` (the runner reads its variables)."""
from __future__ import annotations

import datetime

import torch
import torch.distributed as dist

BACKENDS = {"cpu": "gloo", "cuda": "nccl", "npu": "hccl"}


def init(device: torch.device, world_size: int, timeout_s: float = 300.0) -> None:
    """Join the process group when there is more than one process; a lost peer times out."""
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(BACKENDS[device.type],
                                timeout=datetime.timedelta(seconds=timeout_s))


def enabled() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_gather_objects(obj) -> list:
    if not enabled():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def any_rank(flags: list[bool], device: torch.device) -> list[bool]:
    """Each flag true on every rank if it is true on any: ranks must stop at the same step,
    or the ones still training wait in their next all-reduce until the timeout."""
    if not enabled():
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def barrier() -> None:
    if enabled():
        dist.barrier()


def shutdown() -> None:
    if enabled():
        dist.destroy_process_group()
