"""Text <-> token ids: characters (the Shakespeare char model) or GPT-2's BPE (via tiktoken).

Each tokenizer describes itself as a small JSON-able dict, stored with prepared data and in
checkpoints, so sampling decodes with exactly the tokenizer the model was trained on.
"""

import codecs
from collections.abc import Iterable

import numpy as np

from gptjax.errors import UsageError

TOKENIZERS = ("char", "gpt2")  # the values of config.tokenizer


def _id_dtype(vocab_size: int) -> type:
    return np.uint16 if vocab_size <= 2**16 else np.uint32


class CharVocab:
    """The sorted set of characters of a text; a token id is a character's index in it."""

    eot = None  # documents are simply concatenated

    def __init__(self, chars: str):
        self.chars = chars
        self._ids = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def dtype(self) -> type:
        return _id_dtype(len(self))

    def describe(self) -> dict:
        return {"kind": "char", "chars": self.chars}

    def encode(self, text: str) -> np.ndarray:
        unknown = sorted(set(text) - self._ids.keys())
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {''.join(unknown)!r}")
        return np.fromiter((self._ids[c] for c in text), dtype=self.dtype, count=len(text))

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def pieces(self, ids: Iterable[int]) -> list[bytes]:
        """Each token's own UTF-8 bytes."""
        return [self.chars[int(i)].encode() for i in ids]


class GPT2Tokenizer:
    """OpenAI's GPT-2 byte-pair encoding, 50257 tokens, <|endoftext|> = 50256 between documents."""

    def __init__(self):
        try:
            import tiktoken
        except ImportError:
            raise UsageError("the gpt2 tokenizer needs tiktoken: pip install tiktoken") from None
        try:
            self._encoding = tiktoken.get_encoding("gpt2")
        except Exception as e:  # its BPE files are downloaded on first use
            raise UsageError(
                f"tiktoken could not load GPT-2's BPE files ({type(e).__name__}): run once with a network, "
                "or copy a tiktoken cache made elsewhere into the folder named by TIKTOKEN_CACHE_DIR"
            ) from None
        self.eot = self._encoding.eot_token

    def __len__(self) -> int:
        return self._encoding.n_vocab

    @property
    def dtype(self) -> type:
        return _id_dtype(len(self))

    def describe(self) -> dict:
        return {"kind": "gpt2"}

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._encoding.encode_ordinary(text), dtype=self.dtype)

    def decode(self, ids: Iterable[int]) -> str:
        return self._encoding.decode([int(i) for i in ids])

    def pieces(self, ids: Iterable[int]) -> list[bytes]:
        """Each token's own bytes: a character's UTF-8 bytes may be split over several tokens."""
        return [self._encoding.decode_single_token_bytes(int(i)) for i in ids]


Tokenizer = CharVocab | GPT2Tokenizer


class IncrementalDecoder:
    """Text from tokens that arrive a few at a time (a sample as it is generated): each call
    returns the text its tokens complete, holding back the bytes of a character split across
    tokens (GPT-2's BPE splits most CJK characters and emoji so) until its last byte arrives,
    where decoding each call's tokens alone would print U+FFFD for every part."""

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def __call__(self, ids: Iterable[int]) -> str:
        return self._utf8.decode(b"".join(self._tokenizer.pieces(ids)))

    def flush(self) -> str:
        """At the end of a text: what is held back (U+FFFD for a character cut short), then start over."""
        rest = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return rest


def from_description(description: dict) -> Tokenizer:
    """The tokenizer a describe() dict names."""
    if description["kind"] == "char":
        return CharVocab(description["chars"])
    return GPT2Tokenizer()
