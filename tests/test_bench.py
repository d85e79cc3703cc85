"""bench.py: it measures the config it is given (no timing thresholds)."""

import gzip
import json
from pathlib import Path

from conftest import REPO, cli_error, run_program

from gptjax import bench

TINY = ["--config", str(REPO / "configs/char.py"), "--config.n_layer=1", "--config.n_head=2",
        "--config.n_embd=32", "--config.block_size=16", "--config.batch_size=4", "--config.dropout=0"]


def test_bench_measures_the_configs_model_and_step_and_profiles_it(tmp_path):
    # a subprocess: XLA's CPU backend records its ops for --profile only with a flag read when JAX starts
    out = tmp_path / "results" / "bench.json"  # its folder is made
    result = run_program(["bench.py", *TINY, "--config.gradient_accumulation_steps=2", "--steps=2", "--sample",
                          "--max_new_tokens=20", f"--profile={tmp_path / 'profile'}", f"--json={out}"])
    assert result.returncode == 0, result.stderr
    assert "train_tokens_per_s" in result.stdout and "generate_speedup" in result.stdout
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
    # --profile: the traced step is in the Perfetto file, and its busiest ops are listed
    trace = json.loads(gzip.decompress(Path(results["profile"]).read_bytes()))
    assert any(e.get("args", {}).get("hlo_module") == "jit_train_step" for e in trace["traceEvents"])
    ops = {key.removeprefix("op_ms "): ms for key, ms in results.items() if key.startswith("op_ms ")}
    assert 1 <= len(ops) <= 8 and all(ms > 0 for ms in ops.values())
    assert any(op.startswith("dot") for op in ops)  # the matrix products are among the busiest
    assert sum(ops.values()) <= results["profile_ops_ms"]
    # beside it, the compiled step's optimised HLO, where the traced ops' names are defined
    hlo = gzip.decompress(Path(results["train_step_hlo"]).read_bytes()).decode()
    assert hlo.startswith("HloModule jit_train_step") and f"%{max(ops, key=ops.get)}" in hlo


def test_bench_refuses_bad_options_in_one_line(tmp_path):
    assert "--steps" in cli_error("bench.py", *TINY, "--steps=0")
    (tmp_path / "a_file").touch()
    assert "cannot write in the folder" in cli_error("bench.py", *TINY, f"--profile={tmp_path / 'a_file/trace'}")
    assert "cannot write in the folder" in cli_error("bench.py", *TINY, f"--json={tmp_path / 'a_file/b.json'}")
    assert f"--json {tmp_path} is a folder" in cli_error("bench.py", *TINY, f"--json={tmp_path}")
    assert "unknown config key 'n_layers'" in cli_error("bench.py", "--config", str(REPO / "configs/char.py"),
                                                        "--config.n_layers=2")


def test_a_failed_profile_keeps_the_measurements_and_ends_in_one_line(tmp_path, monkeypatch):
    # e.g. an accelerator's trace whose events carry no hlo_op: the step's numbers must not be lost
    monkeypatch.setattr(bench, "op_times", lambda trace: {})
    out = tmp_path / "bench.json"
    message = cli_error("bench.py", *TINY, "--steps=1", f"--profile={tmp_path / 'profile'}", f"--json={out}")
    assert "--profile failed, the measurements above stand" in message and "holds no XLA ops" in message
    results = json.loads(out.read_text())
    assert results["train_tokens_per_s"] > 0 and "holds no XLA ops" in results["profile_error"]


def _write_trace(path, events):
    path.write_bytes(gzip.compress(json.dumps({"traceEvents": events}).encode()))
    return path


def _process(pid, name):
    return {"ph": "M", "pid": pid, "name": "process_name", "args": {"name": name}}


def _op(pid, tid, start_us, duration_us, hlo_op):
    return {"ph": "X", "pid": pid, "tid": tid, "ts": start_us, "dur": duration_us, "name": hlo_op,
            "args": {"hlo_op": hlo_op, "hlo_module": "jit_train_step"}}


def test_op_times_count_each_ops_own_time_by_kind(tmp_path):
    events = [_process(1, "/host:CPU"),
              _op(1, 7, 0, 100, "while.3"), _op(1, 7, 10, 30, "fusion.1"), _op(1, 7, 50, 10, "dot.2"),
              _op(1, 8, 0, 40, "fusion.12"),  # on another thread at the same time
              {"ph": "X", "pid": 1, "tid": 7, "ts": 0, "dur": 500, "name": "PjitFunction(train_step)"}]
    times = bench.op_times(_write_trace(tmp_path / "cpu.json.gz", events))
    assert times == {"while": 0.06, "fusion": 0.07, "dot": 0.01}
    assert list(times) == ["fusion", "while", "dot"]  # busiest first


def test_op_times_on_an_accelerator_count_its_busiest_line_only(tmp_path):
    events = [_process(1, "/host:CPU"), _process(2, "/device:GPU:0"),
              _op(1, 7, 0, 900, "fusion.1"),  # the host's side of a launch
              _op(2, 13, 0, 30, "fusion.1"), _op(2, 13, 30, 50, "custom-call.4"),  # the compute stream
              _op(2, 14, 0, 5, "copy-start.2")]
    times = bench.op_times(_write_trace(tmp_path / "gpu.json.gz", events))
    assert times == {"custom-call": 0.05, "fusion": 0.03}
