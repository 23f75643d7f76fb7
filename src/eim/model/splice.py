"""Tokenising samples and splicing image tokens into the LLM input (docs/design.md §1).

Layout of one training sequence (``lead`` is the tokenizer's BOS when it adds one, else empty)::

    [lead] [image tokens x P] [instruction] [response] [EOS]      labels: response + EOS only

Text is tokenised per sample without padding; :func:`splice` builds ``inputs_embeds`` and pads on
the tokenizer's side. Position ids are ``cumsum(attention_mask) - 1`` so left and right padding
give the same positions for real tokens, hence the same loss.
"""

import torch

IGNORE = -100  # label of tokens the loss ignores (HF convention)


class TextEncoder:
    """Turns (instruction, response) into token ids and labels with one tokenizer."""

    def __init__(self, tokenizer, max_length=64):
        self.tok, self.max_length = tokenizer, max_length
        probe = tokenizer("a").input_ids
        # BOS leads when the tokenizer adds it (LLaMA); GPT-2-style tokenizers add nothing.
        self.lead = [probe[0]] if tokenizer.bos_token_id is not None and probe and probe[0] == tokenizer.bos_token_id else []
        self.eos = tokenizer.eos_token_id

    def _ids(self, text):
        return self.tok(text, add_special_tokens=False).input_ids if text else []

    def _ids_many(self, texts):
        """:meth:`_ids` of each text, in one batched tokenizer call."""
        full = [i for i, t in enumerate(texts) if t]
        out = [[] for _ in texts]
        if full:
            for i, ids in zip(full, self.tok([texts[i] for i in full], add_special_tokens=False).input_ids):
                out[i] = ids
        return out

    @staticmethod
    def join(instruction, response):
        """Response text as appended to the instruction (a space when the instruction does not end in one)."""
        if instruction and response and not instruction[-1].isspace():
            return " " + response
        return response

    def encode(self, instruction, response):
        """-> (ids, labels, n_lead): lists of equal length, at most ``max_length``.

        The sequence always ends with EOS, so the ``loss_LM`` query and its bank row read the
        same tokens (docs/design.md §2): a sample longer than ``max_length`` keeps its first
        ``max_length - 1`` tokens, then EOS with an IGNORE label (the text does not end there, so
        nothing learns to stop early).
        """
        return self._assemble(self._ids(instruction), self._ids(self.join(instruction, response)))

    def _assemble(self, instruction_ids, answer):
        prompt = self.lead + instruction_ids
        ids, labels = prompt + answer, [IGNORE] * len(prompt) + answer
        if len(ids) < self.max_length:
            return ids + [self.eos], labels + [self.eos], len(self.lead)
        return ids[: self.max_length - 1] + [self.eos], labels[: self.max_length - 1] + [IGNORE], len(self.lead)

    def encode_prompt(self, instruction):
        """Generation prompt: ``[lead] [instruction]`` (image tokens are spliced after ``lead``)."""
        return (self.lead + self._ids(instruction))[-self.max_length :], len(self.lead)

    def encode_text_eos(self, instruction, response):
        """Bank text: instruction + response + EOS (no image), as in docs/design.md §2 — the ids of
        :meth:`encode`, so a truncated sample's query and bank row are the same tokens."""
        return self.encode(instruction, response)[0]

    def encode_text_eos_many(self, pairs):
        """:meth:`encode_text_eos` of each (instruction, response), tokenised in two batched calls."""
        inst = self._ids_many([i for i, _ in pairs])
        ans = self._ids_many([self.join(i, r) for i, r in pairs])
        return [self._assemble(a, b)[0] for a, b in zip(inst, ans)]


def pad_ids(seqs, pad_value, side="right"):
    """Pad a list of int lists to a LongTensor [B, L] on ``side``; also returns the lengths."""
    L = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), max(L, 1)), pad_value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            if side == "right":
                out[i, : len(s)] = torch.tensor(s)
            else:
                out[i, out.shape[1] - len(s) :] = torch.tensor(s)
    return out, torch.tensor([len(s) for s in seqs], dtype=torch.long)


def splice(text_embeds, text_lengths, n_lead, prefix=None, has_prefix=None, labels=None, side="right"):
    """Insert image tokens after each sample's lead tokens and pad the result.

    text_embeds: [B, Lt, D] right-padded text embeddings; text_lengths: [B]; n_lead: [B]
    prefix: [B, P, D] image tokens or None; has_prefix: [B] bool (False: text-only sample)
    labels: [B, Lt] or None. Returns inputs_embeds [B, T, D], attention_mask [B, T],
    position_ids [B, T], labels [B, T] (or None); T = max_b(len_b + P·has_b).

    Row b is ``text[b, :k] · prefix[b] · text[b, k:n]`` (k = n_lead, n = text length), placed at
    the start (right padding) or the end (left padding) of its output row. Built with one scatter
    per source, not per row: its backward is one gather, where per-row slicing cost B full-size
    zero-filled gradients (docs/design.md §1).
    """
    B, Lt, D = text_embeds.shape
    dev = text_embeds.device
    P = 0 if prefix is None else prefix.shape[1]
    if has_prefix is None:
        has_prefix = torch.full((B,), prefix is not None, dtype=torch.bool)
    n = text_lengths.to(dev, torch.long)  # [B]
    k = n_lead.to(dev, torch.long)  # [B]
    p = has_prefix.to(dev, torch.bool).long() * P  # [B] image tokens of each row
    length = n + p  # [B]
    T = int(length.max()) if B else 0
    start = torch.zeros_like(length) if side == "right" else T - length  # [B] first output column
    # text token (b, i), i < n_b, goes to column start_b + i (+ p_b once past the lead)
    i = torch.arange(Lt, device=dev)  # [Lt]
    tb, ti = (i[None, :] < n[:, None]).nonzero(as_tuple=True)  # real text tokens
    tcol = start[tb] + ti + torch.where(ti >= k[tb], p[tb], 0)
    embeds = text_embeds.new_zeros(B, T, D).index_put((tb, tcol), text_embeds[tb, ti])
    if P:
        pb, pr = (torch.arange(P, device=dev)[None, :] < p[:, None]).nonzero(as_tuple=True)  # image tokens
        embeds = embeds.index_put((pb, start[pb] + k[pb] + pr), prefix[pb, pr].to(text_embeds.dtype))
    cols = torch.arange(T, device=dev)  # [T]
    mask = ((cols[None, :] >= start[:, None]) & (cols[None, :] < (start + length)[:, None])).long()  # [B, T]
    out_labels = None
    if labels is not None:
        out_labels = labels.new_full((B, T), IGNORE).index_put((tb, tcol), labels.to(dev)[tb, ti])
        # Nothing precedes a row's first token, so it cannot be a target (with left padding a
        # pad position would otherwise "predict" it and the loss would depend on padding side).
        rows = (length > 0).nonzero(as_tuple=True)[0]
        out_labels[rows, start[rows]] = IGNORE
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return embeds, mask, position_ids, out_labels
