"""Conversation templates (eim.model.template) and their token ids and labels (eim.model.splice.TextEncoder).

``plain`` and ``vicuna_v1`` are checked against LLaVA-1.5's preprocessing of the same conversation
written as a LLaVA record (tests/llava_reference.py, rebuilt from LLaVA's documented layout
independently of eim's code): the rendered prompt, the image split out as ``IMAGE_TOKEN_INDEX``
(-200), BOS only at the start, and as targets each answer and the ``</s>`` after it (``plain``:
everything after the image). Raw records with any whitespace and ``<image>`` placement, through
eim's loader: tests/model/test_template_llava.py.
"""

import pytest
from helpers import TEXTS
from llava_reference import IMAGE_TOKEN_INDEX, VICUNA, llava_positions

from eim.data.sample import Sample
from eim.errors import ConfigError, DataError
from eim.model.splice import IGNORE, TextEncoder
from eim.model.template import render
from eim_harness.tiny import make_tokenizer

CONVERSATIONS = {
    "one turn": [("What colour is the circle?", "It is red.")],
    "three turns": [("What is it?", "A red circle on white."), ("Is it big?", "No, it is small."),
                    ("How many shapes are there?", "There is one.")],
}


@pytest.fixture(scope="module")
def tok():
    """A LLaMA-layout tokenizer: <s> added before every text, </s> the EOS (byte-level BPE)."""
    return make_tokenizer(TEXTS + [VICUNA, "USER: ASSISTANT: What colour is it? How many shapes?"], vocab_size=400,
                          llama_specials=True)


def eim_view(enc, sample):
    """eim's (ids, labels) with the image written as LLaVA writes it: one IMAGE_TOKEN_INDEX."""
    ids, labels, at = enc.encode_sample(sample)
    if sample.image is None:
        return ids, labels
    return ids[:at] + [IMAGE_TOKEN_INDEX] + ids[at:], labels[:at] + [IGNORE] + labels[at:]


def sample(turns, image):
    return Sample(0, "x.png" if image else None, turns[0][0], turns[0][1], turns=turns if len(turns) > 1 else None)


def llava_reference(tok, turns, image, template):
    """LLaVA-1.5's (ids, labels) of the conversation as a LLaVA record, the image one IMAGE_TOKEN_INDEX."""
    messages = []
    for i, (q, a) in enumerate(turns):
        messages += [{"from": "human", "value": ("<image>\n" if image and i == 0 else "") + q},
                     {"from": "gpt", "value": a}]
    record = {"conversations": messages, **({"image": "x.png"} if image else {})}
    ids, labels, blanked = llava_positions(tok, record, template, 10 ** 6, image_positions=1)
    assert not blanked
    return ids, labels


@pytest.mark.parametrize("image", [True, False], ids=["image", "text only"])
@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_vicuna_v1_equals_llava_preprocess_v1(tok, name, image):
    turns = CONVERSATIONS[name]
    enc = TextEncoder(tok, 10 ** 6, template="vicuna_v1")
    assert eim_view(enc, sample(turns, image)) == llava_reference(tok, turns, image, "vicuna_v1")
    ids, labels = eim_view(enc, sample(turns, image))
    answers = tok.decode([x for x in labels if x != IGNORE])
    assert answers.replace(" ", "") == "".join(a + "</s>" for _, a in turns).replace(" ", "")


def test_plain_equals_llava_preprocess_plain(tok):
    turns = [("<image> ignored: plain drops the question", "A red circle on white.")]
    enc = TextEncoder(tok, 10 ** 6, template="plain")
    assert eim_view(enc, sample(turns, True)) == llava_reference(tok, turns, True, "plain")
    with pytest.raises(DataError, match="the plain template renders one"):
        enc.encode_sample(sample(CONVERSATIONS["three turns"], True))


def test_prompt_is_the_conversation_so_far_and_the_assistant_prefix(tok):
    turns = CONVERSATIONS["three turns"]
    enc = TextEncoder(tok, 10 ** 6, template="vicuna_v1")
    ids, at = enc.encode_prompt_sample(sample(turns, True))
    full, labels, at2 = enc.encode_sample(sample(turns, True))
    last_answer = max(i for i, x in enumerate(labels) if x == IGNORE) + 1  # where the last target span starts
    assert at == at2 and ids == full[:last_answer]  # the prompt is the training text up to the last answer
    assert tok.decode(ids).endswith("How many shapes are there? ASSISTANT:")


@pytest.mark.parametrize("name, expect", [
    ("llama_2", "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n<image>\nWhat is it? [/INST] A red circle on white. </s>"
                "<s>[INST] Is it big? [/INST] No, it is small. </s>"),
    ("chatml", "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<image>\nWhat is it?<|im_end|>\n"
               "<|im_start|>assistant\nA red circle on white.<|im_end|>\n<|im_start|>user\nIs it big?<|im_end|>\n"
               "<|im_start|>assistant\nNo, it is small.<|im_end|>\n"),
])
def test_llama_2_and_chatml_layouts(tok, name, expect):
    turns = CONVERSATIONS["three turns"][:2]
    r = render(name, turns, tok, system="Be brief.", image=True)
    assert r.text == expect
    targets = [r.text[a:b] for a, b in r.targets]
    end = " </s>" if name == "llama_2" else "<|im_end|>"
    assert [t.strip() for t in targets] == [(a + end).strip() for _, a in turns]


def test_tokenizer_template_uses_its_generation_blocks_and_refuses_a_template_without(tok):
    import copy

    t = copy.deepcopy(tok)
    t.chat_template = ("{% for m in messages %}{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}\n"
                       "{% else %}<|bot|>{% generation %}{{ m['content'] }}{{ eos_token }}{% endgeneration %}\n"
                       "{% endif %}{% endfor %}{% if add_generation_prompt %}<|bot|>{% endif %}")
    enc = TextEncoder(t, 10 ** 6, template="tokenizer")
    ids, labels, at = enc.encode_sample(sample(CONVERSATIONS["three turns"], True))
    assert tok.decode([x for x in labels if x != IGNORE]) == "".join(a + "</s>" for _, a in CONVERSATIONS["three turns"])
    assert tok.decode(ids[:at]) == "<|user|>"  # the image first in the first user turn
    t.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ConfigError, match=r"has no \{% generation %\} block"):
        TextEncoder(t, 10 ** 6, template="tokenizer").encode_sample(sample(CONVERSATIONS["one turn"], False))


def test_a_system_message_replaces_the_system_line(tok):
    s = sample(CONVERSATIONS["one turn"], False)
    s.system = "You answer in one word."
    assert tok.decode(TextEncoder(tok, 10 ** 6, template="vicuna_v1").encode_sample(s)[0]).startswith(
        "<s>You answer in one word. USER:")
