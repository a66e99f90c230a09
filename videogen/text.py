"""A word-level tokenizer for the small text encoders videogen builds itself.

Built with the ``tokenizers`` library and wrapped as a `PreTrainedTokenizerFast`, so it saves and
loads with ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` like any checkpoint's tokenizer,
and the Wan pipeline's prompt encoding uses it unchanged. Lower-cased, punctuation split off; an
unknown word becomes ``<unk>``; ``</s>`` ends every prompt, as UMT5's tokenizer does.
"""

from __future__ import annotations

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2, as in T5's vocabulary


def build_word_tokenizer(words: list[str], max_length: int = 512) -> PreTrainedTokenizerFast:
    """A tokenizer whose vocabulary is the special tokens followed by ``words`` (deduplicated, in order).

    Args:
        max_length: the tokenizer's ``model_max_length``: prompts are cut to it, and the engine
            pads text embeddings to it (at most 512, Wan's length) instead of to 512.
    """
    vocab: dict[str, int] = {}
    for w in (*SPECIAL_TOKENS, *(w.lower() for w in words)):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=max_length
    )


# Enough words for prompts to tokenize meaningfully in tests and demos of the random model.
BASIC_WORDS = """
a an the of and with on in at to from by over under left right up down moving drifting sliding
bouncing growing shrinking orbiting spinning circle ball square box triangle shape red orange yellow
green blue purple white black grey gray pink background light dark slowly quickly cat dog city street
sea sky sun night day person walking running car forest mountain river rain snow fire water
""".split()
