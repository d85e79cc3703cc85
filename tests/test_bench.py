"""bench.py: it measures the config it is given (no timing thresholds)."""

import json

from conftest import REPO, cli_error

from gptjax import bench

TINY = ["--config", str(REPO / "configs/char.py"), "--config.n_layer=1", "--config.n_head=2",
        "--config.n_embd=32", "--config.block_size=16", "--config.batch_size=4", "--config.dropout=0"]


def test_bench_measures_the_configs_model_and_step(tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench.main(["bench.py", *TINY, "--config.gradient_accumulation_steps=2", "--steps=2", "--sample",
          "--max_new_tokens=20", f"--json={out}"])
    printed = capsys.readouterr().out
    assert "train_tokens_per_s" in printed and "generate_speedup" in printed
    results = json.loads(out.read_text())
    # nanoGPT's count: 12·L·C² (block matrices) + V·C (tied embedding) + (2L+1)·C (LayerNorm
    # scales; char.py has no biases), positions left out
    assert results["params"] == 12 * 32 * 32 + 65 * 32 + 3 * 32
    assert results["mfu"] is None  # no known peak for a CPU
    assert results["devices"] == "1 x cpu"
    # the train step holds the optimizer state and gradients, evaluation does not
    assert results["train_memory_mib"] > results["eval_memory_mib"] > 0
    assert all(results[k] > 0 for k in ("train_tokens_per_s", "eval_tokens_per_s", "generate_tokens_per_s",
                                        "uncached_reference_tokens_per_s"))


def test_bench_refuses_bad_options_in_one_line():
    assert "--steps" in cli_error("bench.py", *TINY, "--steps=0")
    assert "unknown config key 'n_layers'" in cli_error("bench.py", "--config", str(REPO / "configs/char.py"),
                                                        "--config.n_layers=2")
