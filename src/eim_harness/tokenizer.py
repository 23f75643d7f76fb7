"""Tokenizers built offline from text: no tokenizer is downloaded at run time (docs/design.md §7).

Two layouts, as the published models have them, so the code that reads a real GPT-2 or CLIP
folder is the code the tests and the embedded demo run:

- :func:`train_bpe_tokenizer` — GPT-2's: byte-level BPE, one ``<|endoftext|>`` token used as
  EOS, BOS and pad, no special tokens added when encoding; with ``llama_specials`` LLaMA's
  convention instead: ``<unk>``, ``<s>`` (added before every text, as LLaMA's tokenizer adds BOS)
  and ``</s>`` (EOS and pad), so the image tokens are spliced after a BOS lead;
- :func:`train_clip_tokenizer` — CLIP's (``openai/clip-vit-*``): lower-cased word-level BPE with
  the ``</w>`` end-of-word suffix, ``<|startoftext|>`` and ``<|endoftext|>`` as the last two ids,
  and the tokenizer adding both around every text (so CLIP's text tower pools at the EOT).
- :func:`train_sentencepiece_tokenizer` — LLaMA's and Vicuna's: a SentencePiece ``tokenizer.model``
  with the configs written for transformers' slow ``LlamaTokenizer`` (``tokenizer_config.json``,
  ``special_tokens_map.json``), no ``tokenizer.json`` (transformers converts the model on load, with
  ``sentencepiece`` and ``protobuf``).

Real users pass their model's own tokenizer (``AutoTokenizer.from_pretrained``).
"""

import io
import json
import tempfile
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import CLIPTokenizerFast, PreTrainedTokenizerFast

EOS = "<|endoftext|>"  # GPT-2's end-of-text token; also used as pad and bos (GPT-2 convention)
SOT = "<|startoftext|>"  # CLIP's start-of-text token (CLIP's EOT is EOS)
# CLIP's own pre-tokenizer pattern (openai/CLIP simple_tokenizer.py; transformers' CLIPTokenizer)
CLIP_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def train_bpe_tokenizer(texts, vocab_size=512, padding_side="right", model_max_length=128, llama_specials=False):
    """Byte-level BPE with GPT-2's special-token convention (one ``<|endoftext|>`` token), or
    LLaMA's (``llama_specials``: ``<unk>``, ``<s>`` added before every text, ``</s>``).

    ``texts``: an iterable of strings. Returns a ``PreTrainedTokenizerFast`` that round-trips
    through ``save_pretrained``/``from_pretrained``.
    """
    specials = ["<unk>", "<s>", "</s>"] if llama_specials else [EOS]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    byte_level = processors.ByteLevel(trim_offsets=False)
    if not llama_specials:
        tok.post_processor = byte_level
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS,
                                       unk_token=EOS, padding_side=padding_side, model_max_length=model_max_length)
    bos = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                        special_tokens=[("<s>", tok.token_to_id("<s>"))])
    tok.post_processor = processors.Sequence([byte_level, bos])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>",
                                   unk_token="<unk>", padding_side=padding_side, model_max_length=model_max_length)


def train_clip_tokenizer(texts, vocab_size=512, model_max_length=77):
    """A tokenizer laid out like the published CLIP's, its BPE merges learned from ``texts``.

    Returns transformers' own ``CLIPTokenizer`` (fast) built from a ``vocab.json`` and
    ``merges.txt`` in CLIP's format; ``<|startoftext|>`` and ``<|endoftext|>`` are the last two
    ids, as in the published vocabulary (49406, 49407), so both of CLIP's pooling rules (the
    legacy argmax id and the first EOS) find the EOT.
    """
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=max(vocab_size - 2, 2 * len(alphabet)), special_tokens=[],
                                  initial_alphabet=alphabet, end_of_word_suffix="</w>", show_progress=False)
    bpe.train_from_iterator(list(texts), trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    # CLIP's vocabulary holds every byte with and without the end-of-word suffix
    vocab = sorted(model["vocab"], key=model["vocab"].get)
    vocab = list(dict.fromkeys(sorted(alphabet) + [c + "</w>" for c in sorted(alphabet)] + vocab)) + [SOT, EOS]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    with tempfile.TemporaryDirectory() as d:
        Path(d, "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
        Path(d, "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        tok = CLIPTokenizerFast.from_pretrained(d, model_max_length=model_max_length)
    return tok


# lmsys/vicuna-7b-v1.5's tokenizer_config.json and special_tokens_map.json, key for key (the special
# tokens as the AddedToken records it writes; pad null there, <unk> in the map, as LLaVA pads)
def _added(content):
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


VICUNA_TOKENIZER_CONFIG = {
    "add_bos_token": True, "add_eos_token": False, "bos_token": {"__type": "AddedToken", **_added("<s>")},
    "clean_up_tokenization_spaces": False, "eos_token": {"__type": "AddedToken", **_added("</s>")},
    "legacy": False, "model_max_length": 4096, "pad_token": None, "padding_side": "right", "sp_model_kwargs": {},
    "tokenizer_class": "LlamaTokenizer", "unk_token": {"__type": "AddedToken", **_added("<unk>")}}
VICUNA_SPECIAL_TOKENS_MAP = {"bos_token": _added("<s>"), "eos_token": _added("</s>"), "pad_token": "<unk>",
                             "unk_token": _added("<unk>")}


def train_sentencepiece_tokenizer(folder, texts, vocab_size=400):
    """A SentencePiece model trained on ``texts`` with LLaMA's options, saved in Vicuna's layout:
    ``tokenizer.model``, ``tokenizer_config.json`` and ``special_tokens_map.json`` as
    lmsys/vicuna-7b-v1.5 ships them (:data:`VICUNA_TOKENIZER_CONFIG`), no ``tokenizer.json``.

    LLaMA's trainer settings as far as they shape the ids: BPE, byte fallback (the 256 ``<0xNN>``
    pieces right after the specials, ``\\n`` = 13 as in LLaMA), digits split, whitespace-only pieces
    allowed, ``<unk>`` = 0, ``<s>`` = 1, ``</s>`` = 2, no pad piece, and its normaliser: identity,
    a dummy-prefix space, whitespace kept as written. ``vocab_size`` is an upper bound (a small
    corpus may give fewer pieces; at least the 259 specials and bytes). Returns ``folder``.
    """
    import sentencepiece as spm  # a dependency of eim (transformers reads tokenizer.model with it)

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts)), model_writer=buf, model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True, character_coverage=0.99995,
        max_sentencepiece_length=16, split_by_unicode_script=True, split_by_number=True, split_by_whitespace=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=False, hard_vocab_limit=False, num_threads=1, minloglevel=2)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps(VICUNA_TOKENIZER_CONFIG, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(VICUNA_SPECIAL_TOKENS_MAP, indent=2) + "\n")
    return folder
