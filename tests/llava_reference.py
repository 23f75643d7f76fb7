"""LLaVA-1.5's training preprocessing of its raw records, rebuilt from LLaVA's documented behaviour
(``train.py``: ``preprocess_multimodal``, ``preprocess_plain``, ``preprocess_v1``, the collator's cut
and ``prepare_inputs_labels_for_multimodal``'s; ``conversation.py``'s ``conv_vicuna_v1`` and
``conv_llava_plain``; ``mm_utils.tokenizer_image_token``), independently of eim's code: the reference
tests/model/test_template_llava.py, tests/model/test_template.py and tests/commands/test_data.py hold
eim's token ids and labels against.

A record is LLaVA's own JSON object (``{"image"?, "conversations": [{"from", "value"}, ...]}``).
What the result is: the positions the LLM sees, the image written as ``P`` entries
``IMAGE_TOKEN_INDEX``, with their labels (``-100`` off target), after LLaVA's two cuts at
``model_max_length``; and whether LLaVA's "tokenization mismatch" check blanked every label.
"""

import copy
import json
import re
from pathlib import Path
from types import SimpleNamespace

IGNORE = -100
IMAGE_TOKEN_INDEX = -200  # LLaVA's constants.py
IMAGE = "<image>"
VICUNA = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")


# --- the tokenizer LLaVA-1.5 trains with -------------------------------------------------------------
def vicuna_layout_tokenizer(folder, texts, vocab_size=700, legacy=True):
    """A SentencePiece BPE model trained on ``texts`` with LLaMA's options, saved as Vicuna ships its
    tokenizer (:func:`eim_harness.tokenizer.train_sentencepiece_tokenizer`: ``tokenizer.model`` and a
    ``LlamaTokenizer`` config, no ``tokenizer.json``), its config's ``legacy`` flag set to ``legacy``
    (lmsys/vicuna-7b-v1.5 ships ``false``: no dummy-prefix space after a special token)."""
    from eim_harness.tokenizer import train_sentencepiece_tokenizer

    folder = train_sentencepiece_tokenizer(folder, list(texts), vocab_size=vocab_size)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "legacy": legacy}))
    return folder


def slow_llama_tokenizer():
    """Whether transformers provides the slow (SentencePiece) ``LlamaTokenizer`` (before 5.0)."""
    import transformers

    slow = getattr(transformers, "PreTrainedTokenizer", None)
    return slow is not None and issubclass(transformers.LlamaTokenizer, slow)


def llava_tokenizer(folder):
    """The tokenizer LLaVA-1.5's ``train.py`` loads (``use_fast=False``): transformers' slow,
    SentencePiece ``LlamaTokenizer`` where transformers provides one (before 5.0), else the one
    ``AutoTokenizer`` gives (transformers 5 has no slow LLaMA tokenizer); legacy or not as the
    folder's config says."""
    import transformers

    if (Path(folder) / "tokenizer.model").exists() and slow_llama_tokenizer():
        tok = transformers.LlamaTokenizer.from_pretrained(folder)  # the config's legacy flag
    else:
        tok = transformers.AutoTokenizer.from_pretrained(folder)
    return tok


class SentencePieceLegacy:
    """What transformers' slow legacy ``LlamaTokenizer`` computes, on SentencePiece itself (for
    transformers 5, which has no slow LLaMA tokenizer): ``<s>`` first, then the text split at the
    special tokens written in it, each other piece encoded by SentencePiece on its own (its dummy
    prefix added to every piece: the legacy handling)."""

    legacy = True

    def __init__(self, folder):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(Path(folder) / "tokenizer.model"))
        self.specials = {self.sp.id_to_piece(i): i for i in (self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())}
        self.bos_token_id, self.unk_token_id = self.sp.bos_id(), self.sp.unk_id()

    def __call__(self, text, truncation=False, max_length=None):
        ids = [self.bos_token_id]
        for piece in re.split("(" + "|".join(map(re.escape, self.specials)) + ")", text):
            if piece in self.specials:
                ids.append(self.specials[piece])
            elif piece:
                ids += self.sp.encode(piece)
        return SimpleNamespace(input_ids=ids[:max_length] if truncation else ids)


def legacy(tok):
    """LLaVA's ``tokenizer.legacy`` (a tokenizer without the attribute splits text after a special
    token as legacy LLaMA does: the byte-level ones)."""
    return getattr(tok, "legacy", True) is not False


def tokenizers_at_least_0_14():
    import tokenizers
    from packaging import version

    return version.parse(tokenizers.__version__) >= version.parse("0.14")


def tokenizer_image_token(prompt, tok):
    """``mm_utils.tokenizer_image_token``: each chunk around <image> tokenised with the tokenizer's
    own specials, the first token of every chunk but the first dropped when the first chunk starts
    with BOS, IMAGE_TOKEN_INDEX between them."""
    chunks = [tok(c).input_ids for c in prompt.split(IMAGE)]
    out, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == tok.bos_token_id:
        offset = 1
        out.append(chunks[0][0])
    for k, c in enumerate(chunks):
        if k:
            out.append(IMAGE_TOKEN_INDEX)
        out += c[offset:]
    return out


# --- the record ------------------------------------------------------------------------------------
def preprocess_multimodal(messages):
    """A message that holds <image> loses every <image>, is stripped and becomes ``<image>\\n`` + the
    rest (stripped again); every other message stays as written. Run for records with an image only."""
    for m in messages:
        if IMAGE in m["value"]:
            m["value"] = (IMAGE + "\n" + m["value"].replace(IMAGE, "").strip()).strip()
    return messages


def vicuna_prompt(messages, system=VICUNA):
    """``conv_vicuna_v1.get_prompt()`` (SeparatorStyle.TWO, sep " ", sep2 "</s>"): the system line and
    " ", then ``ROLE: message`` + the separator of its role per message, ``ROLE:`` for an empty one."""
    roles, seps = ("USER", "ASSISTANT"), (" ", "</s>")
    out = system + seps[0]
    for i, m in enumerate(messages):
        out += f"{roles[i % 2]}: {m['value']}{seps[i % 2]}" if m["value"] else f"{roles[i % 2]}:"
    return out


def preprocess_v1(tok, messages, has_image, model_max_length, system=VICUNA):
    """(ids, labels, blanked): the prompt tokenised (tokenizer_image_token with an image, else the
    tokenizer cut at model_max_length), and the labels by LLaVA's round arithmetic: rounds split at
    ``</s>``, each round's tokens counted alone (its BOS standing for the ``</s>`` after it), the
    instruction's count less 2 (BOS and the trailing space's token) masked; a later round one token
    less each way for a non-legacy tokenizer under tokenizers >= 0.14. When the count falls short of
    the tokens (and of model_max_length), every label is blanked ("tokenization mismatch")."""
    prompt = vicuna_prompt(messages, system)
    if has_image:
        ids = tokenizer_image_token(prompt, tok)
    else:
        ids = tok(prompt, truncation=True, max_length=model_max_length).input_ids

    def count(text):
        return len(tokenizer_image_token(text, tok) if has_image else tok(text).input_ids)

    labels, sep, cur = list(ids), " ASSISTANT: ", 1
    labels[:cur] = [IGNORE] * min(cur, len(labels))
    for i, rou in enumerate(prompt.split("</s>")):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        round_len, instruction_len = count(rou), count(parts[0] + sep) - 2
        if i and not legacy(tok) and tokenizers_at_least_0_14():
            round_len, instruction_len = round_len - 1, instruction_len - 1
        for j in range(cur, min(cur + instruction_len, len(labels))):
            labels[j] = IGNORE
        cur += round_len
    for j in range(cur, len(labels)):
        labels[j] = IGNORE
    total = sum(x != tok.unk_token_id for x in ids)  # LLaVA pads with <unk> and counts what is not padding
    blanked = cur < model_max_length and cur != total
    if blanked:
        labels = [IGNORE] * len(ids)
    return ids, labels, blanked


def preprocess_plain(tok, messages):
    """(ids, labels): the first message replaced by ``<image>``, then the answer and ``\\n``
    (conv_llava_plain's separator); the image's own tokens (BOS, the image) masked."""
    assert len(messages) == 2 and IMAGE in messages[0]["value"], "LLaVA's plain template takes (image, caption) pairs"
    ids = tokenizer_image_token(IMAGE + messages[1]["value"] + "\n", tok)
    masked = len(tokenizer_image_token(IMAGE, tok))
    return ids, [IGNORE] * masked + ids[masked:]


def llava_positions(tok, record, template, model_max_length, image_positions, system=VICUNA):
    """(positions, labels, blanked) of one raw LLaVA record as LLaVA-1.5 trains it with ``template``
    (``plain`` or ``vicuna_v1``): preprocess_multimodal where the record has an image, the template's
    preprocessing, the collator's cut of the ids (the image one entry) at model_max_length, the image
    expanded to ``image_positions`` entries IMAGE_TOKEN_INDEX (labels -100), and the cut of that at
    model_max_length again. ``blanked``: LLaVA's mismatch check blanked the labels."""
    has_image = "image" in record
    messages = copy.deepcopy(record["conversations"])
    if has_image:
        messages = preprocess_multimodal(messages)
    if template == "plain":
        (ids, labels), blanked = preprocess_plain(tok, messages), False
    elif template == "vicuna_v1":
        ids, labels, blanked = preprocess_v1(tok, messages, has_image, model_max_length, system)
    else:
        raise ValueError(f"LLaVA-1.5 trains with plain or vicuna_v1, not {template}")
    ids, labels = ids[:model_max_length], labels[:model_max_length]
    pos, lab = [], []
    for i, l in zip(ids, labels):
        n = image_positions if i == IMAGE_TOKEN_INDEX else 1
        pos += [i] * n
        lab += [l if i != IMAGE_TOKEN_INDEX else IGNORE] * n
    return pos[:model_max_length], lab[:model_max_length], blanked


def expand(ids, labels, image_positions):
    """eim's ids and labels in LLaVA's convention (one IMAGE_TOKEN_INDEX for the image, as
    ``eim data tokens`` prints them) with the image as its positions."""
    pos, lab = [], []
    for i, l in zip(ids, labels):
        n = image_positions if i == IMAGE_TOKEN_INDEX else 1
        pos += [i] * n
        lab += [l] * n
    return pos, lab
