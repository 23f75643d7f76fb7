"""LLaVA-1.5's training preprocessing, rebuilt from LLaVA's documented layout (``conversation.py``'s
prompts, ``mm_utils.tokenizer_image_token``, ``train.py``'s ``preprocess_plain`` / ``preprocess_v1``
masking), independently of eim's code: the reference tests/model/test_template.py and
tests/commands/test_data.py hold eim's token ids and labels against."""

IGNORE = -100
IMAGE_TOKEN_INDEX = -200  # LLaVA's constants.py
VICUNA = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")


def tokenizer_image_token(prompt, tok):
    """LLaVA's ``mm_utils.tokenizer_image_token``: each chunk around <image> tokenised (BOS stripped
    from all but the first), IMAGE_TOKEN_INDEX between them."""
    chunks = [tok(c).input_ids for c in prompt.split("<image>")]
    out, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == tok.bos_token_id:
        offset = 1
        out.append(chunks[0][0])
    for k, c in enumerate(chunks):
        if k:
            out.append(IMAGE_TOKEN_INDEX)
        out += c[offset:]
    return out


def llava_reference(tok, turns, image, template, system=VICUNA):
    """(input_ids, labels) as LLaVA-1.5's training preprocesses one conversation."""
    if template == "plain":  # preprocess_plain: the image, the caption, the separator "\n"
        prompt = ("<image>" if image else "") + turns[0][1] + "\n"
        ids = tokenizer_image_token(prompt, tok)
        masked = len(tokenizer_image_token("<image>" if image else "", tok))
        return ids, [IGNORE] * masked + ids[masked:]
    # vicuna_v1 (SeparatorStyle.TWO, sep " ", sep2 "</s>"), the image first in the first question
    rounds, prompt = [], system + " "
    for i, (q, a) in enumerate(turns):
        q = ("<image>\n" + q).strip() if image and i == 0 else q
        prompt += f"USER: {q} ASSISTANT:"
        before = prompt
        prompt += f" {a}</s>"
        rounds.append((before, prompt))
    ids = tokenizer_image_token(prompt, tok)
    labels = [IGNORE] * len(ids)
    for before, after in rounds:  # each answer and its </s> are targets
        start, end = len(tokenizer_image_token(before, tok)), len(tokenizer_image_token(after, tok))
        labels[start:end] = ids[start:end]
    return ids, labels
