"""gptjax: nanoGPT's GPT in JAX/Flax NNX. The public API.

`import gptjax` imports nothing heavy: each name below loads its module (and JAX) on first use
(PEP 562), so that the programs can set up their process before JAX loads, and data-preparation
workers start in a fraction of a second.
"""

import importlib

_MODULE_OF = {
    "GPT": "model", "GPTConfig": "model", "CharVocab": "tokenizers", "GPT2Tokenizer": "tokenizers",
    "IncrementalDecoder": "tokenizers", "BPETokenizer": "tokenizers",
    "input_target_windows": "data", "cross_entropy": "step", "TrainState": "step", "train_step": "step",
    "eval_step": "step", "adamw": "optim", "lr_schedule": "optim", "generate": "generation",
    "generate_uncached": "generation", "default_config": "config", "UsageError": "errors", "Interrupted": "errors",
    "from_pretrained": "pretrained", "export_hf": "pretrained", "crop_block_size": "pretrained",
    "checkpoint": None, "explain": None, "tokenizers": None,  # the modules themselves
}
__all__ = list(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'gptjax' has no attribute {name!r}")
    module = _MODULE_OF[name]
    value = importlib.import_module(f"gptjax.{module or name}")
    value = getattr(value, name) if module else value
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
