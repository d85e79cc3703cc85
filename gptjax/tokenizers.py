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


# UTF-8 as a machine of 8 states: 0 between characters; 1, 2, 3: that many continuation bytes
# (0x80-0xBF) still to come; 4-7: two or three to come, the next one in a narrower range (after
# E0, ED, F0 and F4: no overlong form, no surrogate, nothing past U+10FFFF). INVALID: no way on.
UTF8_STATES, INVALID = 8, -1
UTF8_BYTES_NEEDED = np.array([0, 1, 2, 3, 2, 2, 3, 3], np.int8)  # bytes each state needs to end its character


def _utf8_byte_table() -> np.ndarray:
    """The state after each byte (256) from each state (UTF8_STATES), or INVALID; int8."""
    table = np.full((UTF8_STATES, 256), INVALID, np.int8)
    table[0, :0x80] = 0
    table[0, 0xC2:0xE0] = 1
    table[0, 0xE0], table[0, 0xE1:0xF0], table[0, 0xED] = 4, 2, 5
    table[0, 0xF0], table[0, 0xF1:0xF4], table[0, 0xF4] = 6, 3, 7
    for state, (low, high, after) in {1: (0x80, 0xBF, 0), 2: (0x80, 0xBF, 1), 3: (0x80, 0xBF, 2),
                                      4: (0xA0, 0xBF, 1), 5: (0x80, 0x9F, 1), 6: (0x90, 0xBF, 2),
                                      7: (0x80, 0x8F, 2)}.items():
        table[state, low:high + 1] = after
    return table


def utf8_transitions(tokenizer: Tokenizer, vocab_size: int | None = None) -> np.ndarray | None:
    """For a tokenizer whose tokens are bytes (gpt2, bpe), the UTF-8 state after each token from
    each state, int8 (UTF8_STATES, vocab_size), INVALID where the token's bytes cannot follow:
    what a sampler needs to choose only tokens that continue valid UTF-8. Ids past the tokenizer's
    (a vocabulary padded to 50304) are INVALID. None for the char tokenizer, whose every token is
    whole characters."""
    if isinstance(tokenizer, CharVocab):
        return None
    pieces = tokenizer.pieces(range(len(tokenizer)))
    longest = max(len(piece) for piece in pieces)
    bytes_VxL = np.full((len(pieces), longest), 256, np.int16)  # 256: past the token's end, no change
    for i, piece in enumerate(pieces):
        bytes_VxL[i, :len(piece)] = np.frombuffer(piece, np.uint8)
    table = np.concatenate([_utf8_byte_table(), np.arange(UTF8_STATES, dtype=np.int8)[:, None]], axis=1)
    table = np.concatenate([table, np.full((1, 257), INVALID, np.int8)])  # INVALID stays INVALID
    state_SxV = np.broadcast_to(np.arange(UTF8_STATES, dtype=np.int8)[:, None], (UTF8_STATES, len(pieces))).copy()
    for column in bytes_VxL.T:  # a token's bytes, one position at a time over the whole vocabulary
        state_SxV = table[state_SxV, column[None, :]]
    padded = np.full((UTF8_STATES, max(vocab_size or 0, len(pieces))), INVALID, np.int8)
    padded[:, :len(pieces)] = state_SxV
    return padded


def utf8_state(transitions: np.ndarray, ids: Iterable[int]) -> int:
    """The UTF-8 state after ids (utf8_transitions' states), from between characters; 0 where they
    do not form valid UTF-8."""
    state = 0
    for i in ids:
        state = max(int(transitions[state, int(i)]), 0)
    return state


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
