"""Text <-> token ids: characters (the Shakespeare char model), GPT-2's BPE (via tiktoken), or a
byte-level BPE trained on the corpus itself (via Hugging Face's tokenizers).

Each tokenizer describes itself as a small JSON-able dict, stored with prepared data and in
checkpoints, so sampling decodes with exactly the tokenizer the model was trained on.
"""

import codecs
from collections.abc import Iterable

import numpy as np

from gptjax.errors import UsageError

TOKENIZERS = ("char", "gpt2", "bpe")  # the values of config.tokenizer
EOT = "<|endoftext|>"  # between documents, as GPT-2's


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


def _byte_characters() -> dict[int, str]:
    """The printable character that stands for each byte in a byte-level BPE's tokens (GPT-2's
    table: printable Latin-1 characters stand for themselves, the other bytes for U+0100 on)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in kept]
    return {**{b: chr(b) for b in kept}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def _hf_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise UsageError("the bpe tokenizer needs Hugging Face's tokenizers: pip install tokenizers "
                         "(or gptjax's bpe extra)") from None
    return tokenizers


class BPETokenizer:
    """A byte-level BPE trained on a corpus: the 256 bytes, the merges of the most frequent pairs,
    and <|endoftext|> (the last id) between documents. Any UTF-8 text encodes, and decodes back
    exactly. Held as Hugging Face's tokenizer.json text, which travels in its description."""

    def __init__(self, serialized: str):
        self.serialized = serialized
        self._tokenizer = _hf_tokenizers().Tokenizer.from_str(serialized)
        self._tokenizer.encode_special_tokens = True  # "<|endoftext|>" written in a text is text
        self.eot = self._tokenizer.token_to_id(EOT)
        byte_of = {c: b for b, c in _byte_characters().items()}
        vocab = self._tokenizer.get_vocab(with_added_tokens=True)
        self._pieces = [b""] * len(vocab)
        for token, i in vocab.items():
            self._pieces[i] = EOT.encode() if i == self.eot else bytes(byte_of[c] for c in token)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "BPETokenizer":
        """Merges learned from texts until the vocabulary (bytes, merges, <|endoftext|>) has
        vocab_size tokens; the same texts give the same tokenizer. Raises UsageError when the
        texts repeat too few pairs to fill it."""
        check_bpe_vocab_size(vocab_size)
        tk = _hf_tokenizers()
        tokenizer = tk.Tokenizer(tk.models.BPE())
        tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's split of words
        tokenizer.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=2, show_progress=False,
                                         initial_alphabet=list(_byte_characters().values()))
        tokenizer.train_from_iterator(texts, trainer)
        tokenizer.add_special_tokens([EOT])
        if tokenizer.get_vocab_size() < MIN_BPE_VOCAB:
            raise UsageError("the text is too short to train a BPE on (no two bytes follow each other twice): "
                             "give a longer text, or use --config.tokenizer=char")
        if tokenizer.get_vocab_size() < vocab_size:
            raise UsageError(
                f"the text fills a vocabulary of only {tokenizer.get_vocab_size():,} tokens (each merge needs a pair "
                f"that occurs twice): pass --config.bpe_vocab_size={tokenizer.get_vocab_size()} or less, or give "
                "a longer text")
        return cls(tokenizer.to_str())

    def __len__(self) -> int:
        return len(self._pieces)

    @property
    def dtype(self) -> type:
        return _id_dtype(len(self))

    def describe(self) -> dict:
        return {"kind": "bpe", "vocab_size": len(self), "tokenizer": self.serialized}

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tokenizer.encode(text, add_special_tokens=False).ids, dtype=self.dtype)

    def decode(self, ids: Iterable[int]) -> str:
        return b"".join(self.pieces(ids)).decode("utf-8", errors="replace")

    def pieces(self, ids: Iterable[int]) -> list[bytes]:
        """Each token's own bytes: a character's UTF-8 bytes may be split over several tokens."""
        return [self._pieces[int(i)] for i in ids]


BPE_VOCAB_SIZE = 4096  # config.bpe_vocab_size's default
MIN_BPE_VOCAB = 258  # the 256 bytes, <|endoftext|> and one merge
Tokenizer = CharVocab | GPT2Tokenizer | BPETokenizer


def check_bpe_vocab_size(vocab_size: int) -> None:
    """Raise UsageError for a bpe vocabulary too small for the bytes, <|endoftext|> and a merge, or
    too large for uint32 token ids."""
    if not MIN_BPE_VOCAB <= vocab_size <= 2**32:
        raise UsageError(f"config.bpe_vocab_size must be at least {MIN_BPE_VOCAB} (the 256 bytes, {EOT} and one "
                         f"merge) and at most 2**32, got {vocab_size}")


def token_bytes(tokenizer: Tokenizer) -> np.ndarray:
    """Each token id's length in UTF-8 bytes, int32 (V,): 0 for <|endoftext|>, which is no text.
    Bits per byte divide a loss by these, so runs with different tokenizers compare."""
    pieces = tokenizer.pieces(range(len(tokenizer)))
    return np.array([0 if i == tokenizer.eot else len(piece) for i, piece in enumerate(pieces)], np.int32)


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
    if description["kind"] == "bpe":
        return BPETokenizer(description["tokenizer"])
    return GPT2Tokenizer()
