"""nanoGPT's config/train_shakespeare_char.py: a baby GPT on characters of Shakespeare."""

from gptjax.config import default_config


def get_config():
    config = default_config()
    config.out_dir = "out-shakespeare-char"
    config.eval_interval = 250  # keep frequent because we'll overfit
    config.eval_iters = 200
    config.log_interval = 10  # don't print too often
    # we expect to overfit on this small dataset, so only save when val improves
    config.always_save_checkpoint = False

    config.dataset = "shakespeare_char"
    config.gradient_accumulation_steps = 1
    config.batch_size = 64
    config.block_size = 256  # context of up to 256 previous characters

    # baby GPT model :)
    config.n_layer = 6
    config.n_head = 6
    config.n_embd = 384
    config.dropout = 0.2

    config.learning_rate = 1e-3  # with baby networks can afford to go a bit higher
    config.max_iters = 5000
    config.lr_decay_iters = 5000  # make equal to max_iters usually
    config.min_lr = 1e-4  # learning_rate / 10 usually
    config.beta2 = 0.99  # make a bit bigger because number of tokens per iter is small
    config.warmup_iters = 100  # not super necessary potentially
    return config
