"""Multi-process helpers (docs/design.md §9): what ``accelerate`` does not know about.

Training runs on ``accelerate`` (DDP by default; FSDP and DeepSpeed through its config files in
``eim/accelerate_configs/``). These are thin wrappers over ``torch.distributed`` that are no-ops
in a single process, so library code (banks, losses) is written once (:func:`world_size`,
:func:`rank`, :func:`barrier`, :func:`all_reduce_sum`, :func:`broadcast_object`,
:func:`all_gather_rows`), and :func:`shard_range`, the contiguous, balanced row range a rank owns
(banks, bank building, the row-sharded InfoNCE of :mod:`eim.losses.infonce`).
"""

import os

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from accelerate import PartialState


# --- process group helpers (no-ops without one) --------------------------------------------------
def is_distributed(group=None):
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def world_size(group=None):
    return dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1


def rank(group=None):
    return dist.get_rank(group) if dist.is_available() and dist.is_initialized() else 0


def ensure_process_group():
    """Join the launcher's process group when started by ``torchrun``/``accelerate launch``
    (``WORLD_SIZE`` > 1) and nothing has yet — e.g. ``eim banks build`` run on 8 processes.
    Training needs none of this: its ``Accelerator`` joins first."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        PartialState()


def barrier(group=None):
    if is_distributed(group):
        dist.barrier(group=group)


def all_reduce_sum(t, group=None):
    """In-place sum over ranks (returns ``t``); nothing to do in one process."""
    if is_distributed(group):
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


def broadcast_object(obj, src=0, group=None):
    """Rank ``src``'s ``obj`` on every rank (picklable objects)."""
    if not is_distributed(group):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=group)
    return box[0]


def shard_range(n, world, r):
    """``(offset, count)`` of rank r's contiguous share of n items; sizes differ by at most 1."""
    base, extra = divmod(n, world)
    return r * base + min(r, extra), base + (1 if r < extra else 0)


def all_gather_rows(t, sizes, group):
    """Concatenate every rank's ``t`` (rows ``sizes[r]``, other dims equal) in rank order."""
    m = max(sizes)
    padded = t.new_zeros((m, *t.shape[1:]))
    padded[: t.shape[0]] = t
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded.contiguous(), group=group)
    return torch.cat([o[:s] for o, s in zip(out, sizes)])


def average_grads(params):
    """Mean of each gradient over ranks, for parameters FSDP does not manage (plain tensors, not
    the DTensors of the modules it sharded)."""
    for p in params:
        if p.grad is not None and not isinstance(p, DTensor):
            all_reduce_sum(p.grad).div_(world_size())
