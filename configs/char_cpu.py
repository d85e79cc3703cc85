"""configs/char.py shrunk for a laptop CPU, as nanoGPT's README runs it:
--eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4
--n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0 (on the CPU, float32)."""

import pathlib
import runpy

_char = runpy.run_path(str(pathlib.Path(__file__).with_name("char.py")))


def get_config():
    config = _char["get_config"]()
    config.eval_iters = 20
    config.log_interval = 1
    config.block_size = 64
    config.batch_size = 12
    config.n_layer = 4
    config.n_head = 4
    config.n_embd = 128
    config.max_iters = 2000
    config.lr_decay_iters = 2000
    config.dropout = 0.0
    config.dtype = "float32"
    return config
