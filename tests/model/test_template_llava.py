"""LLaVA-1.5's raw records through eim (the LLaVA loader, then :class:`eim.model.splice.TextEncoder`)
equal LLaVA-1.5's own preprocessing of them (tests/llava_reference.py), under ``plain`` and
``vicuna_v1`` (docs/design.md §5): the positions the LLM sees (the image as its P positions) and
their labels, for any whitespace and any ``<image>`` placement in the first question, several turns,
text-only records, and the cut at ``train.max_length`` that counts the image, as LLaVA's
``model_max_length`` does. Two tokenizers: a SentencePiece model in Vicuna's layout (LLaVA's slow
legacy tokenizer where transformers provides one, else the fast one) and a byte-level BPE with
LLaMA's specials (the demos' kind). LLaVA's "tokenization mismatch" blanking is the one behaviour
eim does not copy (test_llava_blanks_...); under transformers 5 (no slow LLaMA tokenizer) the fast
one differs from LLaVA's slow one on a text piece that starts with a space; with the ``legacy:
false`` config Vicuna ships, LLaVA's own round arithmetic blanks records it miscounts (the last two
tests)."""

import copy
import json
import re
from types import SimpleNamespace

import pytest
from format_files import image
from helpers import TEXTS
from llava_reference import (IGNORE, IMAGE_TOKEN_INDEX, VICUNA, SentencePieceLegacy, expand, llava_positions,
                             llava_tokenizer, preprocess_multimodal, slow_llama_tokenizer, vicuna_layout_tokenizer,
                             vicuna_prompt)

from eim.data import load_dataset
from eim.errors import ConfigError
from eim.model.lm import load_tokenizer
from eim.model.splice import TextEncoder
from eim.training.collate import token_view
from eim_harness.tiny import make_tokenizer

P = 5  # the image's positions in the LLM input


def h(text):
    return {"from": "human", "value": text}


def g(text):
    return {"from": "gpt", "value": text}


RECORDS = {  # name -> (image?, conversations)
    "image first": (True, [h("<image>\nWhat colour is the circle?"), g("It is red.")]),
    "image last": (True, [h("What colour is the circle?\n<image>"), g("It is red.")]),
    "image mid": (True, [h("What colour is <image> the circle?"), g("It is red.")]),
    "image mid, no spaces": (True, [h("What colour<image>is the circle?"), g("It is red.")]),
    "image twice": (True, [h("<image> What colour <image> is the circle?"), g("It is red.")]),
    "image alone": (True, [h("<image>"), g("a red circle that is on white.")]),
    "spaces around the image": (True, [h("  \n<image>  What colour is the circle? \n"), g("  It is red. \n")]),
    "answer in newlines": (True, [h("<image>\nWhat is it?"), g("\nA red circle on white.\n\n")]),
    "several turns": (True, [h("<image>\nWhat is it?"), g(" A red circle. "), h(" Is it big? "),
                             g("No, it is small.\n"), h("\nHow many shapes are there?"), g("There is one.")]),
    "text only": (False, [h("  How many sides does a square have?\n"), g(" A square has four sides. ")]),
    "text only, turns": (False, [h("What is it?"), g("A circle.  "), h("\tIs it big?"), g("\nNo.")]),
}
PLAIN = [n for n, (img, conv) in RECORDS.items() if img and len(conv) == 2]
WORDS = [VICUNA, "USER: ASSISTANT: What colour is the circle? It is red. How many sides does a square have?",
         "Is it big? No, it is small. There is one. A red circle on white."]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """name -> (eim's tokenizer, LLaVA's, their folder): the same files, each loaded as its side loads them."""
    root = tmp_path_factory.mktemp("tokenizers")
    out = {}
    try:
        vicuna = vicuna_layout_tokenizer(root / "vicuna", (TEXTS + WORDS) * 4)
        out["sentencepiece"] = (load_tokenizer(_lm(vicuna)), llava_tokenizer(vicuna), vicuna)
        shipped = vicuna_layout_tokenizer(root / "vicuna-shipped", (TEXTS + WORDS) * 4, legacy=False)
        out["sentencepiece, legacy false"] = (load_tokenizer(_lm(shipped)), llava_tokenizer(shipped), shipped)
    except ImportError:  # sentencepiece is a dependency (pyproject.toml); a venv without it tests the other
        pass
    make_tokenizer(TEXTS + WORDS, vocab_size=400, llama_specials=True).save_pretrained(root / "bpe")
    out["byte-level"] = (load_tokenizer(_lm(root / "bpe")), llava_tokenizer(root / "bpe"), root / "bpe")
    return out


def _lm(path):
    """The ``lm`` settings eim's tokenizer loader reads."""
    return SimpleNamespace(name_or_path=str(path), trust_remote_code=False, gguf_file=None)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """name -> (raw record, eim's sample of it read from a LLaVA-format JSON file)."""
    root = tmp_path_factory.mktemp("llava")
    image(root / "a.png", "PNG")
    records = [{"id": name, **({"image": "a.png"} if img else {}), "conversations": conv}
               for name, (img, conv) in RECORDS.items()]
    (root / "mix.json").write_text(json.dumps(records))
    ds = load_dataset(root / "mix.json", data_format="llava")
    assert [s.image_id for s in ds] == list(RECORDS)
    return {r["id"]: (r, ds[i]) for i, r in enumerate(records)}


def eim_positions(tok, sample, template, max_length, system=None):
    view = token_view(TextEncoder(tok, max_length, template=template, system=system, image_positions=P), sample)
    pos, lab = expand(view["input_ids"], view["labels"], P)
    assert view["positions"] == len(pos) <= max_length
    return pos, lab


CASES = [pytest.param(tok, name, template, id=f"{tok}-{template}-{name}") for tok in ("sentencepiece", "byte-level")
         for name in RECORDS for template in (("vicuna_v1", "plain") if name in PLAIN else ("vicuna_v1",))]


@pytest.mark.parametrize("tok_name, name, template", CASES)
def test_a_record_equals_llava_preprocessing(tokenizers, samples, tok_name, name, template):
    """Uncut, then cut 1, 3 and 7 positions short (inside the last answer: an image row keeps
    max_length - P text tokens), the positions and labels are LLaVA's."""
    if tok_name not in tokenizers:
        pytest.skip("sentencepiece is not installed")
    ours, theirs, _ = tokenizers[tok_name]
    record, sample = samples[name]
    full, labels, blanked = llava_positions(theirs, record, template, 10 ** 6, P)
    assert not blanked and any(x != IGNORE for x in labels)
    assert eim_positions(ours, sample, template, 10 ** 6) == (full, labels)
    for L in [len(full) - short for short in (1, 3, 7) if len(full) - short > P + 2]:
        want = llava_positions(theirs, record, template, L, P)
        assert not want[2] and len(want[0]) == L
        assert eim_positions(ours, sample, template, L) == want[:2]


def test_the_cut_counts_the_image_under_llava_templates_and_not_under_raw(tokenizers, samples):
    """train.max_length: under vicuna_v1 the text and the image together; under raw the text alone
    (ClipCap, LaVIN and LLaMA-Adapter: the tiny presets unchanged); a text-only row by its text."""
    ours = tokenizers["byte-level"][0]
    _, img = samples["several turns"]
    _, txt = samples["text only"]
    for template, image_counts in (("vicuna_v1", True), ("raw", False)):
        n = len(TextEncoder(ours, 10 ** 6, template=template).encode_sample(img)[0])
        enc = TextEncoder(ours, n, template=template, image_positions=P)
        ids = enc.encode_sample(img)[0]
        assert len(ids) == (n - P if image_counts else n) and enc.positions(img, ids) == len(ids) + P
        m = len(TextEncoder(ours, 10 ** 6, template=template).encode_sample(txt)[0])
        assert len(TextEncoder(ours, m, template=template, image_positions=P).encode_sample(txt)[0]) == m
    with pytest.raises(ConfigError, match="leaves no text beside an image's 5 positions"):
        TextEncoder(ours, P, template="vicuna_v1", image_positions=P)


def test_llava_blanks_a_record_whose_rounds_it_cannot_count_eim_keeps_its_targets(tokenizers, tmp_path):
    """A text-only record whose first question is empty renders as ``USER:ASSISTANT: ...`` in both;
    LLaVA's round arithmetic finds no `` ASSISTANT: `` in it and blanks every label (its "tokenization
    mismatch"); eim keeps the answer and its ``</s>`` as targets."""
    ours, theirs, _ = tokenizers["byte-level"]
    record = {"id": "q", "conversations": [h(""), g("It is red.")]}
    (tmp_path / "r.json").write_text(json.dumps([record]))
    sample = load_dataset(tmp_path / "r.json", data_format="llava")[0]
    ids, labels, blanked = llava_positions(theirs, record, "vicuna_v1", 10 ** 6, P)
    assert blanked and set(labels) == {IGNORE}
    got, got_labels = eim_positions(ours, sample, "vicuna_v1", 10 ** 6)
    assert got == ids and IMAGE_TOKEN_INDEX not in got
    assert ours.decode([x for x in got_labels if x != IGNORE]).replace(" ", "") == "Itisred.</s>"


def starts_a_piece_with_a_space(record, template):
    """Whether LLaVA's prompt of ``record`` has a piece, between ``<image>`` and the special tokens,
    that starts with a space (the tokenizer reads each piece on its own)."""
    messages = copy.deepcopy(record["conversations"])
    if "image" in record:
        messages = preprocess_multimodal(messages)
    prompt = "<image>" + messages[1]["value"] + "\n" if template == "plain" else vicuna_prompt(messages)
    return any(p.startswith(" ") for p in re.split("<image>|</s>", prompt))


def test_transformers_5_llama_tokenizer_against_llava_s_slow_one(tokenizers, samples):
    """transformers 5 has no slow LLaMA tokenizer, so eim and the test above read Vicuna's files with
    the fast one. Against the slow legacy one LLaVA-1.5 trained with (SentencePiece itself, piece by
    piece), eim's positions and labels differ exactly where a piece starts with a space: the fast one
    adds SentencePiece's dummy-prefix space only where the piece has none (one token fewer) -- here a
    question of ``<image>`` alone under vicuna_v1, and a plain caption that starts with a space."""
    if slow_llama_tokenizer():
        pytest.skip("transformers provides the slow LlamaTokenizer: test_a_record_equals_llava_preprocessing uses it")
    if "sentencepiece" not in tokenizers:
        pytest.skip("sentencepiece is not installed")
    ours, _, folder = tokenizers["sentencepiece"]
    slow = SentencePieceLegacy(folder)
    differ, spaced = set(), set()
    for _, name, template in (c.values for c in CASES if c.values[0] == "sentencepiece"):
        record, sample = samples[name]
        if eim_positions(ours, sample, template, 10 ** 6) != llava_positions(slow, record, template, 10 ** 6, P)[:2]:
            differ.add((name, template))
        if starts_a_piece_with_a_space(record, template):
            spaced.add((name, template))
    assert differ == spaced == {("image alone", "vicuna_v1"), ("spaces around the image", "plain")}


def test_vicuna_s_shipped_config_legacy_false(tokenizers, samples):
    """lmsys/vicuna-7b-v1.5 ships ``legacy: false`` (no dummy-prefix space after ``</s>``): eim's
    ids are LLaVA's for every record, and so are the labels wherever LLaVA's round arithmetic counts
    the record (its non-legacy correction, one token less per later round under tokenizers >= 0.14,
    depends on how the vocabulary splits ``USER`` after ``</s>``; where it miscounts, LLaVA blanks
    the record, which eim does not copy). One-turn records are counted right."""
    if "sentencepiece, legacy false" not in tokenizers:
        pytest.skip("sentencepiece is not installed")
    ours, theirs, _ = tokenizers["sentencepiece, legacy false"]
    blanked = set()
    for _, name, template in (c.values for c in CASES if c.values[0] == "sentencepiece"):
        record, sample = samples[name]
        ids, labels, blank = llava_positions(theirs, record, template, 10 ** 6, P)
        got = eim_positions(ours, sample, template, 10 ** 6)
        assert got[0] == ids and (blank or got[1] == labels), (name, template)
        if blank:
            blanked.add(name)
    assert not blanked & {n for n, (_, conv) in RECORDS.items() if len(conv) == 2}
