"""configs/char_cpu.py (nanoGPT's laptop settings: 4 layers, 4 heads, 128 wide, block 64, batch
12, float32 on a CPU) with the speedrun's changes (modded-nanogpt, nanochat) that bought
iterations here, in half the iterations: RoPE, QK-norm and Muon. docs/performance.md ("a faster
recipe") has what each change bought, and the ones left out (RMSNorm, ReLU², an untied head,
logit soft-capping, zero-initialised projections, the WSD schedule) that did not."""

import pathlib
import runpy

_char_cpu = runpy.run_path(str(pathlib.Path(__file__).with_name("char_cpu.py")))

# The choices configs/char_fast.py shares; the iterations and the model's size are each recipe's own.
FAST = dict(
    position_encoding="rope", qk_norm=True,
    optimizer="muon", muon_lr=0.05,
    learning_rate=3e-3, min_lr=3e-4,  # AdamW's group: embeddings, norms, biases
)


def get_config():
    config = _char_cpu["get_config"]()
    config.update(FAST)
    config.out_dir = "out-shakespeare-char-fast"  # beside, not over, the nanoGPT recipes' run
    config.max_iters = 1000
    config.lr_decay_iters = 1000
    return config
