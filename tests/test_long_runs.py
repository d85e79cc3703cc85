"""Long runs: which checkpoints a run writes, stopping on a signal and resuming exactly, falling
back from an unreadable checkpoint, and records that read as one run after a resume."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO, run_program, tiny_run_args

from gptjax import checkpoint, loop
from gptjax import train as train_program
from gptjax.config import from_command_line


def config(tmp_path, **overrides):
    return from_command_line(["train.py", *tiny_run_args(tmp_path, **overrides)])


def rows(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def step_losses(out_dir) -> list[tuple[int, float]]:
    return [(r["iter"], r["loss"]) for r in rows(out_dir) if "loss" in r]


def test_a_run_saves_its_best_its_intervals_and_its_end(tmp_path):
    # evaluations at 0, 4, 8 save when val loss improves; every 3rd iteration saves; 10 is the end
    loop.train(config(tmp_path, max_iters=10, always_save_checkpoint=False, checkpoint_interval=3,
                      keep_checkpoints=2), stop=loop.StopRequest())
    out, evaluations = tmp_path / "out", [r for r in rows(tmp_path / "out") if "val_loss" in r]
    best = min(evaluations, key=lambda r: r["val_loss"])
    assert set(checkpoint.steps(out)) == {9, 10, best["iter"]}  # the newest two and the best
    assert checkpoint.read_meta(out, best["iter"])["val_loss"] == best["val_loss"]
    assert checkpoint.read_meta(out, 10)["val_loss"] is None  # not an evaluation


def test_a_run_on_a_tiny_text_ends_with_a_checkpoint_sample_loads(tmp_path):
    # a 2 KB text: val loss never improves after iteration 0 in nanoGPT's char recipe on it
    text = tmp_path / "small.txt"
    text.write_text(("First Citizen:\nBefore we proceed any further, hear me speak.\n\n" * 40)[:2048])
    args = ["--config", str(REPO / "configs/char_cpu.py"), f"--config.input_file={text}", "--config.dataset=small",
            f"--config.data_dir={tmp_path / 'data'}", f"--config.out_dir={tmp_path / 'out'}",
            "--config.max_iters=6", "--config.eval_interval=4", "--config.eval_iters=1", "--config.block_size=16",
            "--config.batch_size=2", "--config.n_layer=1", "--config.n_embd=16", "--config.n_head=2"]
    loop.train(from_command_line(["train.py", *args]))
    assert checkpoint.steps(tmp_path / "out")  # something to sample from, whatever val loss did
    sampled = run_program(["sample.py", f"--out_dir={tmp_path / 'out'}", "--max_new_tokens=5", "--num_samples=1",
                           "--start=F"])
    assert sampled.returncode == 0, sampled.stderr


def test_sigterm_saves_exits_0_and_the_resumed_run_matches_an_uninterrupted_one(tmp_path):
    # a long run (its learning-rate schedule ends at lr_decay_iters=8, so max_iters changes nothing)
    args = tiny_run_args(tmp_path, out="stopped", max_iters=100_000, eval_interval=4)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "GPTJAX_HUGE_PAGES": "0", "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:
        for line in process.stdout:
            if line.startswith("iter 9:"):
                process.send_signal(signal.SIGTERM)
                break
        out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    stopped_at = checkpoint.latest_step(tmp_path / "stopped")
    assert f"saved checkpoint to {tmp_path}/stopped/checkpoints/{stopped_at} (" in out  # SIGTERM's, or an evaluation's
    assert f"stopped at iteration {stopped_at} on request" in out and stopped_at >= 10

    end = stopped_at + 3
    loop.train(config(tmp_path, out="stopped", init_from="resume", max_iters=end))
    loop.train(config(tmp_path, out="whole", max_iters=end))
    assert step_losses(tmp_path / "stopped") == step_losses(tmp_path / "whole")  # exactly
    assert [it for it, _ in step_losses(tmp_path / "stopped")] == list(range(end))


def test_ctrl_c_saves_and_exits_130_and_a_second_one_aborts(tmp_path):
    args = ["train.py", *tiny_run_args(tmp_path, max_iters=100_000, eval_interval=1000)]
    metrics = tmp_path / "out/metrics.jsonl"

    def press_ctrl_c():
        while not (metrics.is_file() and '"iter": 5,' in metrics.read_text()):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    with pytest.raises(SystemExit) as exited:
        train_program.main(args)
    assert exited.value.code == 130
    assert checkpoint.latest_step(tmp_path / "out") >= 6
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers put back

    stop = loop.StopRequest()
    stop.request(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        stop.request(signal.SIGINT)


def test_resume_skips_an_unreadable_newest_checkpoint_and_sets_its_records_aside(tmp_path, capsys):
    loop.train(config(tmp_path, max_iters=8))  # saves 0, 4, 8; keeps 4 and 8 (and the best)
    for f in (tmp_path / "out/checkpoints/8").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")
    capsys.readouterr()
    loop.train(config(tmp_path, init_from="resume", max_iters=10))
    err = capsys.readouterr().err
    assert f"skipping the checkpoint {tmp_path}/out/checkpoints/8: it cannot be read (" in err
    assert f"renamed the unreadable checkpoint to {tmp_path}/out/checkpoints/8.unreadable" in err
    assert f"moved to {tmp_path}/out/metrics.past-4.jsonl" in err
    iters = [r["iter"] for r in rows(tmp_path / "out") if "loss" in r]
    assert iters == list(range(10))  # one row per iteration: those past 4 of the first run set aside
    assert [r["iter"] for r in rows(tmp_path / "out") if "val_loss" in r] == [0, 4, 8]
    past = [json.loads(line) for line in (tmp_path / "out/metrics.past-4.jsonl").read_text().splitlines()]
    assert sorted({r["iter"] for r in past}) == [4, 5, 6, 7, 8]
    assert 10 in checkpoint.steps(tmp_path / "out")
    assert (tmp_path / "out/checkpoints/8.unreadable").is_dir()  # kept for a look
