"""nanoGPT's config/eval_gpt2*.py: evaluate one of OpenAI's GPT-2 models on a GPT-2-tokenized dataset.

    python train.py --config configs/eval_gpt2.py                # GPT-2 124M
    python train.py --config configs/eval_gpt2.py:gpt2-xl        # or gpt2-medium, gpt2-large

The model's shape (n_layer, n_head, n_embd, bias) comes from the weights, as in nanoGPT. nanoGPT
evaluates on OpenWebText; the default here is the Shakespeare text (downloaded if absent), so the
command runs anywhere. For another dataset: --config.dataset=NAME --config.input_file=PATH.
It also scores HellaSwag (downloaded on first use; offline: --config.hellaswag_file=PATH, or
--config.hellaswag_interval=0 to skip it).
"""

from gptjax.config import default_config
from gptjax.errors import UsageError
from gptjax.pretrained import GPT2_MODELS


def get_config(model: str = "gpt2"):
    if model not in GPT2_MODELS:
        raise UsageError(f"configs/eval_gpt2.py:{model}: the model must be one of {', '.join(GPT2_MODELS)}")
    config = default_config()
    config.init_from = model
    config.block_size = 1024
    config.batch_size = 8
    config.eval_iters = 500  # use more iterations to get good estimate
    config.eval_only = True
    config.out_dir = f"out-eval-{model}"
    config.dataset = "shakespeare"
    config.tokenizer = "gpt2"
    config.hellaswag_interval = config.eval_interval  # and HellaSwag (build-nanogpt: 0.2955 for gpt2)
    return config
