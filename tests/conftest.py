import pathlib
import runpy

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


def cli_error(script: str, *args: str) -> str:
    """Run the main() of the repo's `script` (train.py, sample.py) in this process on args and
    return the message it exits with, checking that it is one line naming the program."""
    main = runpy.run_path(str(pathlib.Path(__file__).resolve().parent.parent / script))["main"]
    with pytest.raises(SystemExit) as exit_info:
        main([script, *args])
    message = str(exit_info.value.code)
    assert message.startswith(f"{script}: error: ") and "\n" not in message
    return message
