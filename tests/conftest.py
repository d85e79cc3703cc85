import pytest
from flax import nnx

import gptjax


def tiny_config(**overrides) -> gptjax.GPTConfig:
    """A model small enough that a test compiles and runs it in about a second."""
    fields = dict(block_size=16, vocab_size=23, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True)
    return gptjax.GPTConfig(**{**fields, **overrides})


@pytest.fixture
def tiny_model() -> gptjax.GPT:
    return gptjax.GPT(tiny_config(), rngs=nnx.Rngs(0))
