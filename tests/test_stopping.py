"""A stop is answered within seconds in every phase: during an evaluation or HellaSwag scoring the
run abandons it, saves its last completed step and a resumed run repeats the evaluation exactly;
sampling ends at once; the message after a stop names what there is to resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, program_env, save_untrained_run, tiny_run_args
from flax import nnx
from test_hellaswag import EXAMPLES, write_jsonl

import gptjax
from gptjax import checkpoint, hellaswag, loop
from gptjax import train as train_program
from gptjax.config import from_command_line


def rows(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def evaluations_and_steps(out_dir) -> list[dict]:
    """The rows of metrics.jsonl without what depends on the clock."""
    timed = {"ms_per_iter", "tokens_per_s", "mfu"}
    return [{k: v for k, v in row.items() if k not in timed} for row in rows(out_dir)]


def test_a_stop_during_an_evaluation_abandons_it_saves_and_the_resumed_run_repeats_it(tmp_path, monkeypatch,
                                                                                       capsys):
    batches, evaluate_batch = [], loop.eval_totals

    def eval_totals(state, *args):
        if int(state.step) == 4:  # the evaluation at iteration 4: SIGTERM during its second batch
            batches.append(len(batches))
            if len(batches) == 2:
                os.kill(os.getpid(), signal.SIGTERM)
        return evaluate_batch(state, *args)

    monkeypatch.setattr(loop, "eval_totals", eval_totals)
    train_program.main(["train.py", *tiny_run_args(tmp_path, out="stopped", eval_iters=6)])  # exits 0 on SIGTERM
    out = capsys.readouterr().out
    stopped = tmp_path / "stopped"
    assert batches == [0, 1]  # abandoned before the next of its 12 batches
    assert checkpoint.latest_step(stopped) == 4
    assert f"saved checkpoint to {stopped}/checkpoints/4 (SIGTERM received)" in out
    assert (f"stopped at iteration 4 on request: {stopped}/checkpoints/4 holds it, and --config.init_from=resume "
            "continues from there") in out
    assert [r["iter"] for r in rows(stopped) if "val_loss" in r] == [0]  # nothing of the abandoned one

    monkeypatch.undo()
    config = lambda out, **overrides: from_command_line(["train.py", *tiny_run_args(tmp_path, out, eval_iters=6,
                                                                                    **overrides)])
    loop.train(config("stopped", init_from="resume"))
    loop.train(config("whole"))
    assert not list(stopped.glob("metrics.past-*"))  # the resumed run repeats nothing it set aside
    assert evaluations_and_steps(stopped) == evaluations_and_steps(tmp_path / "whole")  # exactly


def run_until(args: list[str], ready, signals: list[signal.Signals]) -> tuple[subprocess.CompletedProcess, float]:
    """Run `python *args`, send `signals` (0.2 s apart) once ready() holds, and return its result and
    the seconds from the first signal to its exit."""
    with subprocess.Popen([sys.executable, *args], cwd=REPO, env=program_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:
        deadline = time.monotonic() + 120
        while not ready() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        time.sleep(1.0)  # well inside the phase ready() announces
        sent = time.monotonic()
        for signum in signals:
            process.send_signal(signum)
            time.sleep(0.2)
        out, err = process.communicate(timeout=120)
        return subprocess.CompletedProcess(args, process.returncode, out, err), time.monotonic() - sent


@pytest.mark.parametrize("signals, status", [([signal.SIGTERM], 0), ([signal.SIGINT, signal.SIGTERM], 130)])
def test_a_signal_in_a_long_evaluation_stops_the_run_within_seconds_with_a_checkpoint(tmp_path, signals, status):
    # 2 x 100,000 batches: minutes of evaluating at iteration 0
    args = ["train.py", *tiny_run_args(tmp_path, max_iters=8, eval_iters=100_000)]
    result, seconds = run_until(args, (tmp_path / "out/metrics.jsonl").exists, signals)
    assert result.returncode == status, result.stderr  # a SIGTERM after a Ctrl-C leaves the Ctrl-C's status
    assert seconds < 10, seconds  # 2 s and the batch in flight, with room for a loaded machine
    assert checkpoint.latest_step(tmp_path / "out") == 0
    assert f"stopped at iteration 0 on request: {tmp_path}/out/checkpoints/0 holds it" in result.stdout
    assert not (tmp_path / "out/run.lock").read_text()  # let go


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sampling_stops_at_once_in_one_line(tmp_path, signum):
    save_untrained_run(tmp_path / "out", "abcdefgh")
    args = ["sample.py", f"--out_dir={tmp_path / 'out'}", "--start=abc", "--num_samples=1",
            "--max_new_tokens=1000000"]  # minutes of generating
    stderr = tmp_path / "stderr"
    with open(stderr, "w") as err:
        started = lambda: "loading" in stderr.read_text()
        with subprocess.Popen([sys.executable, *args], cwd=REPO, env=program_env(), stdout=subprocess.PIPE,
                              stderr=err, text=True) as process:
            while not started() and process.poll() is None:
                time.sleep(0.05)
            time.sleep(2.0)  # compiled, and generating
            sent = time.monotonic()
            process.send_signal(signum)
            out, _ = process.communicate(timeout=60)
    assert time.monotonic() - sent < 5
    assert process.returncode == 128 + signum
    assert "---------------" not in out  # it was in the middle of the sample
    assert stderr.read_text().splitlines()[-1] == f"sample.py: stopped by {signal.Signals(signum).name}"


def test_a_second_ctrl_c_names_the_checkpoint_to_resume_or_says_there_is_none(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # as the second Ctrl-C raises it

    monkeypatch.setattr(train_program, "train", interrupted)
    for saved in (False, True):
        if saved:
            save_untrained_run(tmp_path / "out", "abc")
        with pytest.raises(SystemExit) as exited:
            train_program.main(["train.py", *tiny_run_args(tmp_path)])
        assert exited.value.code == 130
        said = "stopped at once by a second Ctrl-C, without saving: "
        said += (f"{tmp_path}/out/checkpoints/0 is the newest checkpoint; --config.init_from=resume continues from it"
                 if saved else "no checkpoint was saved, so the next run starts anew")
        assert capsys.readouterr().err == f"train.py: {said}\n"


def test_a_stop_during_hellaswag_scoring_abandons_it_and_the_resumed_run_scores_it_again(tmp_path, monkeypatch):
    cfg = gptjax.GPTConfig(vocab_size=50257, block_size=32, n_layer=1, n_head=2, n_embd=16)  # as tiny_run_args
    gptjax.export_hf(gptjax.GPT(cfg, rngs=nnx.Rngs(0)), tmp_path / "hf")
    write_jsonl(tmp_path / "hellaswag.jsonl", EXAMPLES * 6)  # 3 batches of 8 examples
    args = lambda out, **overrides: tiny_run_args(tmp_path, out, **{
        "init_from": tmp_path / "hf", "tokenizer": "gpt2", "block_size": 32, "hellaswag_interval": 4,
        "hellaswag_file": tmp_path / "hellaswag.jsonl", **overrides})
    scored, score_batch = [], hellaswag._ending_losses

    def ending_losses(*args):
        scored.append(len(scored))
        if len(scored) == 5:  # the second batch at iteration 4 (3 batches at iteration 0)
            os.kill(os.getpid(), signal.SIGTERM)
        return score_batch(*args)

    monkeypatch.setattr(hellaswag, "_ending_losses", ending_losses)
    train_program.main(["train.py", *args("stopped")])
    assert len(scored) == 5 and checkpoint.latest_step(tmp_path / "stopped") == 4
    assert [r["iter"] for r in rows(tmp_path / "stopped") if "hellaswag_acc" in r] == [0]
    monkeypatch.undo()
    loop.train(from_command_line(["train.py", *args("stopped", init_from="resume")]))
    loop.train(from_command_line(["train.py", *args("whole")]))
    assert evaluations_and_steps(tmp_path / "stopped") == evaluations_and_steps(tmp_path / "whole")


def test_a_stop_while_starting_ends_the_run_at_once_even_inside_a_device_computation(tmp_path):
    # a new out_dir holding only its lock, and minutes of computing that Python cannot interrupt
    program = f"""
import pathlib, jax, jax.numpy as jnp
from gptjax import lock, stopping
run_lock = lock.RunLock(pathlib.Path({str(tmp_path / 'out')!r}))
run_lock.acquire()
with stopping.StopRequest("train.py") as stop:
    stop.undo_on_exit(run_lock.release)
    print("computing", flush=True)
    long = jax.jit(lambda x: jax.lax.fori_loop(0, 10**6, lambda i, x: jnp.tanh(x @ x), x))
    long(jnp.ones((256, 256))).block_until_ready()
"""
    with subprocess.Popen([sys.executable, "-c", program], env=program_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout.readline() == "computing\n"
        time.sleep(1.0)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert time.monotonic() - sent < 3
    assert process.returncode == 143
    assert err == "train.py: stopped by SIGTERM while starting, before any iteration: nothing of the run was written\n"
    assert not (tmp_path / "out").exists()  # undone: the new out_dir is gone
