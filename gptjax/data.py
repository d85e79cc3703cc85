"""Text -> token ids, and token ids -> (input, target) training pairs."""

import numpy as np


class CharVocab:
    """The sorted set of characters of a text; a token id is a character's index in it."""

    def __init__(self, chars: str):
        self.chars = chars
        self._ids = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        unknown = sorted(set(text) - self._ids.keys())
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {''.join(unknown)!r}")
        dtype = np.uint16 if len(self.chars) <= 2**16 else np.uint32
        return np.fromiter((self._ids[c] for c in text), dtype=dtype, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def input_target_windows(tokens: np.ndarray, starts, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """x = tokens[i : i+T] and y = tokens[i+1 : i+T+1] for each start i: the target is the input
    shifted by one, so position t learns to predict token t+1. Returns int32 arrays (len(starts), T)."""
    offsets = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(block_size + 1)
    windows = np.asarray(tokens[offsets], dtype=np.int32)
    return windows[:, :-1], windows[:, 1:]
