"""gptjax: nanoGPT's GPT in JAX/Flax NNX. The public API."""

from gptjax import checkpoint
from gptjax.config import default_config
from gptjax.data import input_target_windows
from gptjax.errors import UsageError
from gptjax.generate import generate, generate_uncached
from gptjax.model import GPT, GPTConfig
from gptjax.optim import adamw, lr_schedule
from gptjax.pretrained import crop_block_size, export_hf, from_pretrained
from gptjax.step import TrainState, cross_entropy, eval_step, train_step
from gptjax.tokenizers import CharVocab, GPT2Tokenizer

__all__ = [
    "GPT", "GPTConfig", "CharVocab", "input_target_windows", "cross_entropy", "adamw",
    "lr_schedule", "TrainState", "train_step", "eval_step", "generate", "generate_uncached", "checkpoint",
    "default_config", "UsageError", "from_pretrained", "export_hf", "crop_block_size", "GPT2Tokenizer",
]
