"""Whole copies of chosen parameters of a model that DeepSpeed or FSDP may have partitioned
(docs/design.md §8, §9): what a stage writes is the parameters it trained, gathered a group at a
time, never the whole model."""

from collections.abc import Iterable

import torch

GROUP_BYTES = 1 << 30  # ZeRO-3 gathers at most about this many bytes of parameters at once


def whole_tensors(model: torch.nn.Module, names: Iterable[str], main: bool,
                  group_bytes: int = GROUP_BYTES) -> dict[str, torch.Tensor]:
    """``{name: CPU tensor}`` of ``model``'s parameters named in ``names``, whole, on the main process
    (an empty dict on the others). Under ZeRO-3 (parameters carry ``ds_id``) every process must call
    it: the parameters are gathered with ``deepspeed.zero.GatheredParameters``, ``group_bytes`` at a
    time; under FSDP2 a sharded parameter (a ``DTensor``) is gathered with ``full_tensor()``, also a
    collective; otherwise the parameters are whole already and are copied as they are."""
    wanted = set(names)
    params = [(n, p) for n, p in model.named_parameters() if n in wanted]
    out: dict[str, torch.Tensor] = {}
    if any(hasattr(p, "ds_id") for _, p in params):
        import deepspeed  # only under ZeRO-3, where it is installed

        group, size = [], 0
        for i, (n, p) in enumerate(params):
            group.append((n, p))
            size += getattr(p, "ds_numel", p.numel()) * p.element_size()
            if size >= group_bytes or i == len(params) - 1:
                with deepspeed.zero.GatheredParameters([q for _, q in group], modifier_rank=None):
                    if main:
                        out.update((m, q.data.detach().to("cpu", copy=True)) for m, q in group)
                group, size = [], 0
        return out
    for n, p in params:
        if hasattr(p, "full_tensor"):  # an FSDP2 DTensor
            t = p.full_tensor()
        else:
            t = p.data
        if main:
            out[n] = t.detach().to("cpu", copy=True)
    return out
