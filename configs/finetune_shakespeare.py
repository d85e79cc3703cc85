"""nanoGPT's config/finetune_shakespeare.py: finetune OpenAI's GPT-2 XL on Shakespeare (BPE).

nanoGPT takes 32 micro-batches of 1 sequence per update; so does this recipe.
"""

import pathlib
import runpy

_eval = runpy.run_path(str(pathlib.Path(__file__).with_name("eval_gpt2.py")))


def get_config():
    config = _eval["get_config"]("gpt2-xl")
    config.eval_only = False
    config.hellaswag_interval = 0  # eval_gpt2.py's HellaSwag: off, as in nanoGPT's recipe
    config.out_dir = "out-shakespeare"
    config.eval_interval = 5
    config.eval_iters = 40
    config.log_interval = 1
    config.dataset = "shakespeare"
    config.tokenizer = "gpt2"
    # only save checkpoints if the validation loss improves
    config.always_save_checkpoint = False
    # the number of examples per iter:
    # 1 batch_size * 32 grad_accum * 1024 tokens = 32,768 tokens/iter
    # shakespeare has 301,966 tokens, so 1 epoch ~= 9.2 iters
    config.batch_size = 1
    config.gradient_accumulation_steps = 32
    config.max_iters = 20
    # finetune at constant LR
    config.learning_rate = 3e-5
    config.decay_lr = False
    return config
