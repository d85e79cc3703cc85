"""nanoGPT's config/train_gpt2.py: GPT-2 124M from scratch, ~0.5M tokens per update
(12 sequences x 1024 tokens x 40 micro-batches), on GPT-2-tokenized text.

The data: data/openwebtext/input.txt, or --config.input_file=docs.jsonl ({"text": ...} lines), a
folder of .txt, .jsonl or .parquet shards, or hf:NAME (a Hugging Face Hub dataset, streamed; the data
extra); it is tokenized with tiktoken's GPT-2 encoding on first use.
"""

from gptjax.config import default_config


def get_config():
    config = default_config()
    config.out_dir = "out-gpt2"
    config.dataset = "openwebtext"
    config.tokenizer = "gpt2"
    config.val_fraction = 0.0005  # nanoGPT's data/openwebtext/prepare.py: ~4,000 of OpenWebText's 8M documents
    config.batch_size = 12
    config.block_size = 1024
    config.gradient_accumulation_steps = 5 * 8
    # this makes total number of tokens be 300B
    config.max_iters = 600000
    config.lr_decay_iters = 600000
    # eval stuff
    config.eval_interval = 1000
    config.eval_iters = 200
    config.log_interval = 10
    # weight decay
    config.weight_decay = 1e-1
    return config
