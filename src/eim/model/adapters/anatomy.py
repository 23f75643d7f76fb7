"""What the adapter methods share (docs/design.md §4): finding a model's attention modules, the
interface :class:`eim.model.multimodal.MultimodalLM` talks to, and batch bookkeeping.

An LLM-side adapter's parameters live in one submodule of the Hugging Face LM,
``lm.eim_adapter`` (:data:`ADAPTER_ATTR`), so a checkpoint of the tuned tensors is small.
"""

from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from eim.errors import ConfigError

ADAPTER_ATTR = "eim_adapter"  # submodule of the HF LM that holds an LLM-side adapter's parameters


# ------------------------------------------------------------------------------------------------
# model anatomy


def decoder_attentions(model):
    """The self-attention module of every decoder layer of a HF causal LM (LLaMA family, GPT-2)."""
    for path in ("model.layers", "transformer.h", "model.decoder.layers", "gpt_neox.layers"):
        node = model
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if isinstance(node, nn.ModuleList):
            attns = [getattr(layer, "self_attn", None) or getattr(layer, "attn", None) for layer in node]
            if all(a is not None for a in attns):
                return attns
    raise ConfigError(f"cannot find the decoder layers of {type(model).__name__} "
                      "(supported: LLaMA-family model.layers[i].self_attn, GPT-2 transformer.h[i].attn)")


def lm_adapter(lm):
    """The LLM-side adapter attached to ``lm`` (:class:`AdaptionPrompt`, :class:`LaVINAdapters`) or None."""
    return getattr(lm, ADAPTER_ATTR, None) if isinstance(lm, nn.Module) else None


def first_real(mask, batch_size=None, device=None):
    """Index of each row's first attended position [B] (0 when there is no 2-D mask)."""
    if mask is None or mask.dim() != 2:
        return None if batch_size is None else torch.zeros(batch_size, dtype=torch.long, device=device)
    return mask.long().argmax(-1)  # argmax returns the first maximum


def match_batch(t, batch):
    """``t`` [b, ...] for a batch of ``batch`` rows: beam search repeats each sample's rows."""
    if t.shape[0] == batch:
        return t
    if t.shape[0] and batch % t.shape[0] == 0:
        return t.repeat_interleave(batch // t.shape[0], dim=0)
    raise RuntimeError(f"adapter state has {t.shape[0]} rows for a batch of {batch}")


class LMAdapter(nn.Module):
    """Interface :class:`eim.model.multimodal.MultimodalLM` uses for an LLM-side adapter."""

    def prepare(self, embeds, mask, pos, labels, has_image=None, visual=None):
        """Last touch on the spliced LLM input ([B, T, D], mask, positions, labels); may add tokens."""
        return embeds, mask, pos, labels

    @contextmanager
    def generating(self):
        """Keep per-sample state for every forward of one ``generate`` call."""
        yield

    def state(self):
        """The per-call state a layer's forward reads (None: none)."""
        return None

    def set_state(self, state):
        pass

    def checkpoint_context(self):
        """``(forward, recompute)`` contexts for ``torch.utils.checkpoint``'s ``context_fn``: the
        recompute of a checkpointed layer, in backward, reads the per-call state the layer's forward
        read, not whatever a later LLM call of the same step left (docs/design.md §9)."""
        saved = self.state()
        if saved is None:
            return nullcontext(), nullcontext()

        @contextmanager
        def restored():
            now = self.state()
            self.set_state(saved)
            try:
                yield
            finally:
                self.set_state(now)

        return nullcontext(), restored()

    def parts(self):
        return {}


def count_params(params):
    return sum(p.numel() for p in params)
