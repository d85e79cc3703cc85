"""Long runs: which checkpoints a run writes, stopping on a signal and resuming exactly, falling
back from an unreadable checkpoint, and records that read as one run after a resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO, load_dataset, program_env, tiny_run_args

from gptjax import checkpoint, loop, prepare, sources, stopping
from gptjax import sample as sample_program
from gptjax import train as train_program
from gptjax.config import from_command_line


def config(tmp_path, **overrides):
    return from_command_line(["train.py", *tiny_run_args(tmp_path, **overrides)])


def rows(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def step_losses(out_dir) -> list[tuple[int, float]]:
    return [(r["iter"], r["loss"]) for r in rows(out_dir) if "loss" in r]


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A run that saves as a long one does: evaluations at 0, 4, 8 save when val loss improves,
    every 3rd iteration saves, iteration 10 is the end; the newest 2 and the best are kept."""
    tmp_path = tmp_path_factory.mktemp("saved")
    loop.train(config(tmp_path, max_iters=10, always_save_checkpoint=False, checkpoint_interval=3,
                      keep_checkpoints=2))
    return tmp_path / "out"


def test_a_run_saves_its_best_its_intervals_and_its_end(saved_run):
    best = min((r for r in rows(saved_run) if "val_loss" in r), key=lambda r: r["val_loss"])
    assert set(checkpoint.steps(saved_run)) == {9, 10, best["iter"]}  # the newest two and the best
    assert checkpoint.read_meta(saved_run, best["iter"])["val_loss"] == best["val_loss"]
    assert checkpoint.read_meta(saved_run, 10)["val_loss"] is None  # not an evaluation


def test_the_best_checkpoint_survives_resumes_that_evaluate_less_and_keep_fewer(tmp_path):
    loop.train(config(tmp_path, max_iters=8, eval_interval=4, always_save_checkpoint=False))
    best = min((r for r in rows(tmp_path / "out") if "val_loss" in r), key=lambda r: r["val_loss"])["iter"]
    for max_iters, keep in [(11, 1), (14, 3), (17, 1)]:
        loop.train(config(tmp_path, init_from="resume", max_iters=max_iters, eval_interval=1000, checkpoint_interval=1,
                          keep_checkpoints=keep, always_save_checkpoint=False))
        assert best in checkpoint.steps(tmp_path / "out")
    assert checkpoint.steps(tmp_path / "out") == sorted({best, 17})
    assert checkpoint.choose(tmp_path / "out", "best")[0][0] == best


def test_resume_continues_the_runs_own_settings_and_says_what_the_command_line_changes(tmp_path, capsys):
    loop.train(config(tmp_path, max_iters=8))  # configs/char_cpu.py, shrunk
    capsys.readouterr()
    # the README's resume line names configs/char.py, whichever recipe the run was trained with
    args = ["train.py", "--config", str(REPO / "configs/char.py"), "--config.init_from=resume", "--config.max_iters=10",
            f"--config.out_dir={tmp_path / 'out'}", f"--config.data_dir={tmp_path / 'data'}", "--config.dataset=tiny",
            f"--config.input_file={tmp_path / 'corpus.txt'}"]
    train_program.main(args)
    said = capsys.readouterr().out.splitlines()
    assert f"resuming {tmp_path}/out with max_iters 8 -> 10 (--config.max_iters)" in said
    assert (f"resuming {tmp_path}/out with its own batch_size=4 (the recipe says 64; --config.batch_size=64 changes "
            "it)") in said
    recorded = json.loads((tmp_path / "out/config.json").read_text())
    first_run = from_command_line(["train.py", *tiny_run_args(tmp_path, max_iters=8)])
    assert recorded == {**first_run.to_dict(), "max_iters": 10, "init_from": "resume", "attention": "masked",
                        "mesh": {"data": 1, "fsdp": 1}, "vocab_size": 41,  # as resolved
                        "environment": recorded["environment"]}
    assert [r["iter"] for r in rows(tmp_path / "out") if "loss" in r] == list(range(10))


def test_a_run_on_a_tiny_text_ends_with_a_checkpoint_sample_loads(tmp_path, capsys):
    # a model that does not learn: every evaluation scores the same batches the same, so the best
    # (the earliest of equals) stays iteration 0
    text = tmp_path / "small.txt"
    text.write_text(("First Citizen:\nBefore we proceed any further, hear me speak.\n\n" * 40)[:2048])
    args = ["--config", str(REPO / "configs/char_cpu.py"), f"--config.input_file={text}", "--config.dataset=small",
            f"--config.data_dir={tmp_path / 'data'}", f"--config.out_dir={tmp_path / 'out'}",
            "--config.max_iters=6", "--config.eval_interval=4", "--config.eval_iters=1", "--config.block_size=16",
            "--config.batch_size=2", "--config.n_layer=1", "--config.n_embd=16", "--config.n_head=2",
            "--config.learning_rate=0", "--config.decay_lr=False"]
    loop.train(from_command_line(["train.py", *args]))
    assert checkpoint.steps(tmp_path / "out")  # something to sample from, whatever val loss did
    evaluated = [(r["train_loss"], r["val_loss"]) for r in rows(tmp_path / "out") if "val_loss" in r]
    assert len(evaluated) == 2 and len(set(evaluated)) == 1  # each evaluation scores the same batches
    # and checkpoint_minutes, a millisecond's worth: every iteration is that far from the last save
    loop.train(from_command_line(["train.py", *args, "--config.init_from=resume", "--config.max_iters=9",
                                  "--config.checkpoint_minutes=1e-5", "--config.keep_checkpoints=10"]))
    assert checkpoint.steps(tmp_path / "out")[-4:] == [6, 7, 8, 9]
    capsys.readouterr()
    sample_program.main(["sample.py", f"--out_dir={tmp_path / 'out'}", "--max_new_tokens=5", "--num_samples=1",
                         "--start=F"])
    out, err = capsys.readouterr()
    assert out.startswith("F")
    # its best is the untrained model (a recipe that saves only improvements: sample loads the best)
    assert err.splitlines() == [
        f"loading {tmp_path}/out/checkpoints/0 (iteration 0, val loss {err.split('val loss ')[1][:6]}): the lowest val "
        "loss", "iteration 0 is the untrained model, but the run went on to iteration 9: pass --checkpoint=newest to "
        "load that one"]


def test_sigterm_saves_exits_0_and_the_resumed_run_matches_an_uninterrupted_one(tmp_path, capsys):
    # a long run (its learning-rate schedule ends at lr_decay_iters=8, so max_iters changes nothing)
    args = tiny_run_args(tmp_path, out="stopped", max_iters=100_000, eval_interval=4)
    env = program_env({"PYTHONUNBUFFERED": "1"})
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
    capsys.readouterr()
    best = min(r["val_loss"] for r in rows(tmp_path / "stopped") if "val_loss" in r)
    loop.train(config(tmp_path, out="stopped", init_from="resume", max_iters=end))
    assert capsys.readouterr().out.startswith(
        f"resuming {tmp_path}/stopped/checkpoints/{stopped_at} (iter {stopped_at}, best val {best:.4f}): ")
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
    before = signal.getsignal(signal.SIGINT)  # Python's default_int_handler, or SIG_IGN in a background job
    with pytest.raises(SystemExit) as exited:
        train_program.main(args)
    assert exited.value.code == 130
    assert checkpoint.latest_step(tmp_path / "out") >= 6
    assert signal.getsignal(signal.SIGINT) is before  # handlers put back

    stop = stopping.StopRequest()
    stop.started()
    stop.request(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        stop.request(signal.SIGINT)


def test_a_signal_while_train_py_prepares_its_data_stops_it_and_the_next_run_continues_it(tmp_path, monkeypatch,
                                                                                          capsys):
    monkeypatch.setattr(sources, "PIECE_BYTES", 64)  # the tiny corpus in hundreds of tasks
    encode, tasks = prepare._encode, []

    def encode_then_signal(task, tokenizer=None):
        tasks.append(task)
        if len(tasks) == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler preempting the job
        return encode(task, tokenizer)

    monkeypatch.setattr(prepare, "_encode", encode_then_signal)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exited:
        train_program.main(["train.py", *tiny_run_args(tmp_path, num_proc=1)])
    assert exited.value.code == 143  # 128 + SIGTERM: a shell reads it as "ended by SIGTERM"
    assert capsys.readouterr().err == (f"train.py: error: SIGTERM received: the preparation of {tmp_path}/data/tiny "
                                       "stopped after 0 MB of text, which are kept: run it again to continue from "
                                       "there\n")
    assert signal.getsignal(signal.SIGTERM) is before and len(tasks) == 5  # stopped at once, handlers put back
    lines = []
    load_dataset(tmp_path / "data", "tiny", str(tmp_path / "corpus.txt"), 16, announce=lines.append,
                      num_proc=1)
    assert lines[0].startswith(f"continuing the preparation of {tmp_path}/data/tiny where it stopped")
    assert len(tasks) == len(list(prepare._tasks(sources.Reader(tmp_path / "corpus.txt"))))  # each task once


def test_resume_skips_an_unreadable_newest_checkpoint_and_sets_its_records_aside(saved_run, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(saved_run, out)
    for f in (out / "checkpoints/10").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")  # as a kill or a full disk during the save might leave it
    capsys.readouterr()
    loop.train(config(tmp_path, init_from="resume", max_iters=12, checkpoint_interval=3, keep_checkpoints=2))
    err = capsys.readouterr().err
    assert f"skipping the checkpoint {out}/checkpoints/10: it cannot be read (" in err
    assert f"renamed the unreadable checkpoint to {out}/checkpoints/10.unreadable" in err
    assert f"moved to {out}/metrics.past-9.jsonl" in err
    assert [r["iter"] for r in rows(out) if "loss" in r] == list(range(12))  # one row per iteration
    assert [r["iter"] for r in rows(out) if "val_loss" in r] == [0, 4, 8, 12]
    past = [json.loads(line) for line in (out / "metrics.past-9.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in past] == [9]  # the first run's step 9, done again after resuming
    best = min((r for r in rows(out) if "val_loss" in r), key=lambda r: r["val_loss"])["iter"]
    assert set(checkpoint.steps(out)) == {9, 12, best}
    assert (out / "checkpoints/10.unreadable").is_dir()  # kept for a look


def test_resuming_a_finished_run_sets_nothing_aside_and_repeats_its_last_evaluation(tmp_path, capsys):
    loop.train(config(tmp_path, max_iters=8))
    finished = rows(tmp_path / "out")
    loop.train(config(tmp_path, init_from="resume", max_iters=12))
    assert "moved to" not in capsys.readouterr().err and not list((tmp_path / "out").glob("metrics.past-*"))
    again = rows(tmp_path / "out")
    assert again[:len(finished)] == finished  # the evaluation of iteration 8 repeated exactly, once
    assert [r["iter"] for r in again if "val_loss" in r] == [0, 4, 8, 12]
