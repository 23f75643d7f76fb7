"""Splicing image tokens into the LLM input, and the labels (eim.model.splice)."""

import torch

from eim.data.sample import Sample
from eim.model.splice import IGNORE, TextEncoder, splice


def test_splice_places_image_tokens_and_masks_labels_token_by_token():
    D = 2
    text = torch.arange(2 * 5 * D, dtype=torch.float).view(2, 5, D)  # [B=2, Lt=5, D]
    lengths, lead = torch.tensor([4, 2]), torch.tensor([1, 0])
    labels = torch.tensor([[IGNORE, IGNORE, 7, 8, IGNORE], [5, 6, IGNORE, IGNORE, IGNORE]])
    prefix = -torch.ones(2, 3, D)  # 3 image tokens
    has = torch.tensor([True, False])  # second sample is text-only
    for side in ("right", "left"):
        emb, mask, pos, lab = splice(text, lengths, lead, prefix, has, labels, side=side)
        assert emb.shape == (2, 7, D)  # max(4 + 3, 2 + 0)
        row0 = [text[0, 0], *prefix[0], text[0, 1], text[0, 2], text[0, 3]]
        assert torch.equal(emb[0], torch.stack(row0))
        assert lab[0].tolist() == [IGNORE, IGNORE, IGNORE, IGNORE, IGNORE, 7, 8]
        real = slice(0, 2) if side == "right" else slice(5, 7)
        assert torch.equal(emb[1, real], text[1, :2])
        # a row's first token has no predecessor, so it is never a target
        assert lab[1, real].tolist() == [IGNORE, 6] and (lab[1] != IGNORE).sum() == 1
        assert mask[1].sum() == 2 and mask[0].sum() == 7
        assert pos[1, real].tolist() == [0, 1]  # positions ignore padding on either side


def test_text_encoder_labels_cover_response_and_eos_only(clipcap):
    _, tok, _ = clipcap
    enc = TextEncoder(tok, max_length=64)
    ids, labels, lead = enc.encode("what is it?", "a red circle.")
    prompt = tok("what is it?", add_special_tokens=False).input_ids
    answer = tok(" a red circle.", add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert ids == prompt + answer
    assert labels == [IGNORE] * len(prompt) + answer
    assert lead == 0


def test_batched_bank_encoding_equals_one_sample_at_a_time():
    """``encode_bare_many`` (the bank build's batched tokenising) gives each pair's
    ``encode_text_eos``: empty instruction or response, a truncated sample, GPT-2 and LLaMA layouts."""
    from eim_harness.tiny import make_tokenizer

    texts = ["what is it?", "a red circle on the left.", "two blue squares", "Answer: (A)"]
    pairs = [("what is it?", "a red circle."), ("", "two blue squares"), ("Answer:", ""), ("", ""),
             ("what is it? " * 20, "a red circle on the left. " * 20)]
    for llama in (False, True):
        enc = TextEncoder(make_tokenizer(texts * 10, vocab_size=300, llama_specials=llama), max_length=24)
        assert bool(enc.lead) == llama
        many = enc.encode_bare_many([Sample(k, None, i, r) for k, (i, r) in enumerate(pairs)])
        assert many == [enc.encode_text_eos(i, r) for i, r in pairs]
        assert len(many[-1]) == 24
        conv = Sample(0, None, "what is it?", "a red circle.", turns=[("what is it?", "a red circle."), ("", "two blue squares")])
        assert enc.encode_bare_many([conv, conv]) == [enc.encode_bare(conv)] * 2


def _splice_per_row(text, lengths, lead, prefix, has, labels, side):
    """The per-row definition (what splice computed before it was vectorised, issue 16)."""
    rows, lrows = [], []
    for b in range(text.shape[0]):
        n, k = int(lengths[b]), int(lead[b])
        img = [prefix[b]] if bool(has[b]) else []
        rows.append(torch.cat([text[b, :k], *img, text[b, k:n]]))
        lrows.append(torch.cat([labels[b, :k], *[labels.new_full((prefix.shape[1],), IGNORE)] * len(img), labels[b, k:n]]))
    T = max(r.shape[0] for r in rows)
    emb = text.new_zeros(len(rows), T, text.shape[2])
    lab = labels.new_full((len(rows), T), IGNORE)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for b, (r, lr) in enumerate(zip(rows, lrows)):
        sl = slice(0, len(r)) if side == "right" else slice(T - len(r), T)
        emb[b, sl], lab[b, sl], mask[b, sl] = r, lr, 1
        lab[b, sl.start] = IGNORE
    return emb, mask, (mask.cumsum(-1) - 1).clamp(min=0), lab


def test_splice_equals_the_per_row_definition_in_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    B, Lt, P, D = 7, 9, 3, 5
    lengths = torch.tensor([9, 1, 4, 7, 2, 9, 5])
    lead = torch.tensor([1, 0, 1, 0, 1, 0, 1])
    has = torch.tensor([True, False, True, True, False, True, True])
    labels = torch.randint(0, 50, (B, Lt), generator=g)
    labels[torch.rand(B, Lt, generator=g) < 0.3] = IGNORE
    for side in ("right", "left"):
        text = torch.randn(B, Lt, D, generator=g, requires_grad=True)
        prefix = torch.randn(B, P, D, generator=g, requires_grad=True)
        got = splice(text, lengths, lead, prefix, has, labels, side=side)
        want = _splice_per_row(text, lengths, lead, prefix, has, labels, side)
        for a, b in zip(got, want):
            assert torch.equal(a, b)
        w = torch.randn(got[0].shape, generator=g)
        ga = torch.autograd.grad((got[0] * w).sum(), (text, prefix))
        gb = torch.autograd.grad((want[0] * w).sum(), (text, prefix))
        for a, b in zip(ga, gb):
            assert torch.equal(a, b)
