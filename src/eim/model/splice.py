"""Tokenising samples and splicing image tokens into the LLM input (docs/design.md §1).

Layout of one training sequence in the ``raw`` template (``lead`` is the tokenizer's BOS when it
adds one, else empty)::

    [lead] [image tokens x P] [instruction] [response] [EOS]      labels: response + EOS only

(a conversation repeats ``[instruction] [response] [EOS]`` per turn, every response and EOS a
target); the other templates (:mod:`eim.model.template`) place the image where their text says.

How long a sample may be (docs/design.md §5): under the ``raw`` layout ``max_length`` counts text
tokens (the image's positions come on top, as ClipCap, LaVIN and LLaMA-Adapter count); under every
rendered template it counts what the LLM sees, as LLaVA-1.5's ``model_max_length`` does: an image row
keeps ``max_length - P`` text tokens, P the image's positions in the LLM input.

Text is tokenised per sample without padding; :func:`splice` builds ``inputs_embeds`` and pads on
the tokenizer's side. Position ids are ``cumsum(attention_mask) - 1`` so left and right padding
give the same positions for real tokens, hence the same loss.
"""

import torch

from eim.errors import ConfigError, DataError
from eim.model.template import IMAGE, render, targets_of

IGNORE = -100  # label of tokens the loss ignores (HF convention)


class TextEncoder:
    """Turns samples into token ids and labels with one tokenizer and one conversation template
    (:mod:`eim.model.template`; ``raw``: the bare layout above, built from ids).

    ``encode_sample`` (training: ids, labels, image position), ``encode_prompt_sample`` (generation:
    the conversation so far and the last question, with the template's assistant prefix) and
    ``encode_bare`` (what EIM's banks read: every turn's instruction and response in the bare layout,
    each answer followed by EOS, whatever the template; docs/design.md §2).

    ``image_positions``: P, the positions one image takes in the LLM input
    (:func:`eim.training.tracking.image_positions`); under a rendered template an image row's text
    is cut to ``max_length - P`` (0: the text alone counts).
    """

    def __init__(self, tokenizer, max_length=64, template="raw", system=None, image_positions=0):
        self.tok, self.max_length, self.template, self.system = tokenizer, max_length, template, system
        self.image_positions = int(image_positions)
        if template != "raw" and self.image_positions >= max_length:
            raise ConfigError(f"max_length {max_length} (train.max_length, or the prompt limit) leaves no text beside an "
                              f"image's {self.image_positions} positions: under the {template} template it counts "
                              "the image's positions too, as LLaVA's model_max_length does; raise it")
        probe = tokenizer("a").input_ids
        # BOS leads when the tokenizer adds it (LLaMA); GPT-2-style tokenizers add nothing.
        self.lead = [probe[0]] if tokenizer.bos_token_id is not None and probe and probe[0] == tokenizer.bos_token_id else []
        self.eos = tokenizer.eos_token_id

    @classmethod
    def for_recipe(cls, tokenizer, recipe, stage=None, max_length=None, image_positions=0):
        """The encoder of ``stage`` of ``recipe`` (default: its last, what a trained run is served with):
        the stage's template, the recipe's ``data.system`` and ``train.max_length``; ``image_positions``
        as in the class."""
        return cls(tokenizer, max_length or recipe.train.max_length, template=recipe.stage_template(stage),
                   system=recipe.data.system, image_positions=image_positions)

    def text_limit(self, sample):
        """Text tokens ``sample`` may keep: ``max_length``, less the image's positions for an image row
        under a rendered template (the module's docstring)."""
        if self.template == "raw" or sample.image is None:
            return self.max_length
        return self.max_length - self.image_positions

    def positions(self, sample, ids):
        """Positions the LLM sees for ``sample`` encoded as ``ids`` (its text): the text and, for an
        image row, the image's."""
        return len(ids) + (self.image_positions if sample.image is not None else 0)

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

    # --- samples ---------------------------------------------------------------------------------
    def encode_sample(self, sample):
        """-> (ids, labels, n_lead) of a training sample: lists of equal length, at most
        :meth:`text_limit` (as LLaVA cuts, after the targets are marked: no EOS added); ``n_lead`` is
        where the image tokens go."""
        if self.template == "raw":
            return self._raw(sample.conversation)
        ids, labels, at = self._rendered(sample.conversation, sample.image is not None, self._system(sample))
        limit = self.text_limit(sample)
        if sample.image is not None and at > limit:
            raise DataError(f"{at} text tokens come before the image, and with its {self.image_positions} positions "
                            f"they pass max_length {self.max_length}", remedy="shorten the system message or raise "
                            "train.max_length")
        return ids[:limit], labels[:limit], at

    def encode_prompt_sample(self, sample):
        """-> (ids, n_lead): the conversation's earlier turns, then its last question as a prompt."""
        turns = sample.conversation
        if self.template == "raw":
            history = self._raw(turns[:-1], cut=False)[0] if len(turns) > 1 else self.lead
            return (history + self._ids(turns[-1][0].strip()))[-self.max_length :], len(self.lead)
        ids, _, at = self._rendered(turns[:-1] + [(turns[-1][0], None)], sample.image is not None, self._system(sample))
        drop = max(0, len(ids) - self.text_limit(sample))
        return ids[drop:], max(0, at - drop)

    def encode_bare(self, sample):
        """The bank's text of a sample: the bare layout of every turn (:meth:`_raw`)."""
        return self._raw(sample.conversation)[0]

    def encode_sample_bare(self, sample):
        """-> (ids, labels, n_lead) of the bare layout (:meth:`encode_sample` of ``raw``)."""
        return self._raw(sample.conversation)

    def encode_bare_many(self, samples):
        """:meth:`encode_bare` of each sample, its text tokenised in two batched calls."""
        convs = [self._stripped(s.conversation) for s in samples]
        qs = self._ids_many([q for c in convs for q, _ in c])
        answers = self._ids_many([self.join(q, a) for c in convs for q, a in c])
        out, k = [], 0
        for c in convs:
            out.append(self._raw_ids(qs[k : k + len(c)], answers[k : k + len(c)])[0])
            k += len(c)
        return out

    def render(self, sample, prompt=False):
        """The template's text of a sample (``<image>`` where the image goes), for ``eim data tokens``."""
        turns = sample.conversation
        if prompt:
            turns = turns[:-1] + [(turns[-1][0], None)]
        return render(self.template, turns, self.tok, self._system(sample), sample.image is not None).text

    def _system(self, sample):
        """The sample's own system message, else the recipe's (``data.system``), else None (the template's)."""
        return sample.system if sample.system is not None else self.system

    # --- the raw layout ----------------------------------------------------------------------------
    @staticmethod
    def _stripped(turns):
        """The bare layout reads each question and answer stripped (the loaders other than LLaVA's
        and the messages layout give them so; those two keep LLaVA's whitespace for its templates)."""
        return [(q.strip() if q else q, a.strip() if a else a) for q, a in turns]

    def _raw(self, turns, cut=True):
        """``[lead] q1 a1 [EOS] q2 a2 [EOS] ...`` (each text stripped), labels on every answer and its
        EOS. Longer than ``max_length``: the first ``max_length - 1`` tokens, then EOS with an IGNORE
        label (the text does not end there, so nothing learns to stop early); the ``loss_LM`` query
        of a truncated sample reads exactly its bank row's tokens (docs/design.md §2)."""
        turns = self._stripped(turns)
        qs = [self._ids(q) for q, _ in turns]
        return self._raw_ids(qs, [self._ids(self.join(q, a)) for q, a in turns], cut)

    def _raw_ids(self, questions, answers, cut=True):
        ids, labels = list(self.lead), [IGNORE] * len(self.lead)
        for q, a in zip(questions, answers):
            ids += q + a + [self.eos]
            labels += [IGNORE] * len(q) + a + [self.eos]
        if cut and len(ids) > self.max_length:
            ids, labels = ids[: self.max_length - 1] + [self.eos], labels[: self.max_length - 1] + [IGNORE]
        return ids, labels, len(self.lead)

    # --- the text templates ------------------------------------------------------------------------
    def _rendered(self, turns, image, system):
        """(ids, labels, image position) of a rendered conversation: the text cut at ``<image>``,
        each piece tokenised on its own (as LLaVA's ``tokenizer_image_token``), BOS once at the start
        (the ``tokenizer`` template writes its own specials), targets by character span."""
        r = render(self.template, turns, self.tok, system, image)
        chunks = r.text.split(IMAGE)
        if len(chunks) > 2:
            raise DataError(f"the {self.template} rendering holds {IMAGE} {len(chunks) - 1} times; one image per sample",
                            remedy="remove <image> from the text of later turns")
        ids = [] if self.template == "tokenizer" else list(self.lead)
        targets = [False] * len(ids)
        at, pos = len(ids), 0
        for k, chunk in enumerate(chunks):
            if k:
                at, pos = len(ids), pos + len(IMAGE)
            if chunk:
                enc = self.tok(chunk, add_special_tokens=False, return_offsets_mapping=True)
                ids += enc.input_ids
                targets += targets_of(enc.offset_mapping, r.targets, pos)
            pos += len(chunk)
        return ids, [i if t else IGNORE for i, t in zip(ids, targets)], at

    # --- the (instruction, response) API of the raw layout --------------------------------------------
    def encode(self, instruction, response):
        """-> (ids, labels, n_lead) of one (instruction, response) turn in the raw layout."""
        return self._raw([(instruction, response)])

    def encode_text_eos(self, instruction, response):
        """Bank text of one turn: instruction + response + EOS (no image), the ids of :meth:`encode`."""
        return self.encode(instruction, response)[0]


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
