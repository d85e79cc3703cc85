"""bench.py: what it reports is consistent with the config it measured (no timing thresholds)."""

import json
import pathlib
import runpy

import pytest

from conftest import cli_error

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY = ["--config", str(REPO / "configs/char.py"), "--config.n_layer=1", "--config.n_head=2",
        "--config.n_embd=32", "--config.block_size=16", "--config.batch_size=4", "--config.dropout=0"]


def test_bench_reports_consistent_numbers(tmp_path, capsys):
    out = tmp_path / "bench.json"
    main = runpy.run_path(str(REPO / "bench.py"))["main"]
    main(["bench.py", *TINY, "--config.gradient_accumulation_steps=2", "--steps=2", "--sample",
          "--max_new_tokens=20", f"--json={out}"])
    results = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "train_tokens_per_s" in printed and "generate_speedup" in printed
    # nanoGPT's count: 12·L·C² (block matrices) + V·C (tied embedding) + (2L+1)·C (LayerNorm
    # scales; char.py has no biases), positions left out
    assert results["params"] == 12 * 32 * 32 + 65 * 32 + 3 * 32
    tokens_per_iter = 2 * 4 * 16  # accumulation steps x batch x block
    assert results["train_tokens_per_s"] * results["train_ms_per_iter"] / 1e3 == pytest.approx(tokens_per_iter)
    assert results["eval_tokens_per_s"] * results["eval_ms_per_batch"] / 1e3 == pytest.approx(4 * 16)
    assert results["mfu"] is None  # no known peak for a CPU
    assert results["train_memory_mib"] > results["eval_memory_mib"] > 0
    assert results["generate_speedup"] == pytest.approx(
        results["generate_tokens_per_s"] / results["uncached_reference_tokens_per_s"])


def test_bench_refuses_bad_options_in_one_line():
    assert "--steps" in cli_error("bench.py", *TINY, "--steps=0")
    assert "unknown config key 'n_layers'" in cli_error("bench.py", "--config", str(REPO / "configs/char.py"),
                                                        "--config.n_layers=2")
