"""Splicing image tokens into the LLM input, and the labels (eim.model.splice)."""

import torch

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
