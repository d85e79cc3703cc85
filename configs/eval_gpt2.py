"""nanoGPT's config/eval_gpt2*.py: evaluate one of OpenAI's GPT-2 models on a GPT-2-tokenized dataset.

    python train.py --config configs/eval_gpt2.py                # GPT-2 124M
    python train.py --config configs/eval_gpt2.py:gpt2-xl        # or gpt2-medium, gpt2-large

nanoGPT evaluates on OpenWebText; the default here is the Shakespeare text (downloaded if absent),
so the command runs anywhere. For another dataset: --config.dataset=NAME --config.input_file=PATH.
"""

from gptjax.config import default_config
from gptjax.errors import UsageError

GPT2_SHAPES = {  # n_layer, n_head, n_embd of OpenAI's four GPT-2 sizes
    "gpt2": (12, 12, 768), "gpt2-medium": (24, 16, 1024),
    "gpt2-large": (36, 20, 1280), "gpt2-xl": (48, 25, 1600),
}


def get_config(model: str = "gpt2"):
    if model not in GPT2_SHAPES:
        raise UsageError(f"configs/eval_gpt2.py:{model}: the model must be one of {', '.join(GPT2_SHAPES)}")
    config = default_config()
    config.init_from = model
    config.n_layer, config.n_head, config.n_embd = GPT2_SHAPES[model]
    config.bias = True
    config.block_size = 1024
    config.batch_size = 8
    config.eval_iters = 500  # use more iterations to get good estimate
    config.eval_only = True
    config.out_dir = f"out-eval-{model}"
    config.dataset = "shakespeare"
    config.tokenizer = "gpt2"
    return config
