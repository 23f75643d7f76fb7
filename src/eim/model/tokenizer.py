"""Tokenizers built offline from text (no hub downloads on this platform, docs/design.md §7).

A byte-level BPE trained on the training text and wrapped as a Hugging Face
``PreTrainedTokenizerFast`` stands in for GPT-2's and CLIP's tokenizers in tests and in the
embedded demo. Real users pass their model's own tokenizer (``AutoTokenizer.from_pretrained``).
"""

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"  # GPT-2's end-of-text token; also used as pad and bos (GPT-2 convention)


def train_bpe_tokenizer(texts, vocab_size=512, padding_side="right", model_max_length=128):
    """Byte-level BPE with GPT-2's special-token convention (one ``<|endoftext|>`` token).

    ``texts``: an iterable of strings. Returns a ``PreTrainedTokenizerFast`` that round-trips
    through ``save_pretrained``/``from_pretrained``.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=EOS,
        padding_side=padding_side,
        model_max_length=model_max_length,
    )
