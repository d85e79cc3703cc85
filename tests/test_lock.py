"""lock.py and the training program around it: one writer per run directory, a lock left by a
process that ended taken over, unwritable folders refused before any work, and signals while a run
starts ending it in one line with nothing written."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO, program_env, tiny_run_args

from gptjax import checkpoint, loop
from gptjax.config import from_command_line
from gptjax.errors import UsageError
from gptjax.lock import LOCK_FILE, RunLock


def rows(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    first = RunLock(tmp_path / "run")
    first.acquire()
    holder = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    holder_said = re.escape(f"(pid {os.getpid()} on {socket.gethostname()}, since {holder['since']})")
    with pytest.raises(UsageError, match=rf"^{tmp_path}/run is in use by another run {holder_said}: wait for it"):
        RunLock(tmp_path / "run").acquire()
    first.release()
    second = RunLock(tmp_path / "run")
    notes = []
    second.acquire(notes.append)
    assert notes == []  # let go of properly: nothing to take over
    second.release()


def test_the_lock_of_a_killed_process_is_taken_over_with_a_note(tmp_path):
    holding = subprocess.Popen(
        [sys.executable, "-c", f"from gptjax.lock import RunLock; RunLock({str(tmp_path)!r}).acquire(); "
                               "print('held', flush=True); import time; time.sleep(60)"],
        cwd=REPO, env=program_env(), stdout=subprocess.PIPE, text=True)
    assert holding.stdout.readline() == "held\n"
    with pytest.raises(UsageError, match=f"pid {holding.pid} on"):
        RunLock(tmp_path).acquire()
    holding.kill()
    holding.wait()
    notes = []
    lock = RunLock(tmp_path)
    lock.acquire(notes.append)
    assert len(notes) == 1 and notes[0].startswith(f"{tmp_path} was locked by pid {holding.pid} on ")
    assert notes[0].endswith(", which no longer runs: the lock is taken over")
    lock.release()


def test_a_run_that_wrote_nothing_leaves_no_folder_and_an_existing_one_stays(tmp_path):
    lock = RunLock(tmp_path / "new" / "run")
    lock.acquire()
    lock.release()
    assert not (tmp_path / "new" / "run").exists()
    (tmp_path / "kept").mkdir()
    lock = RunLock(tmp_path / "kept")
    lock.acquire()
    lock.release()
    assert (tmp_path / "kept").is_dir()


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux's /sys, which no one may write in")
@pytest.mark.parametrize("key", ["out_dir", "data_dir"])
def test_a_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path, key):
    args = tiny_run_args(tmp_path, **{key: "/sys"})
    with pytest.raises(UsageError, match=rf"^config.{key}: cannot write in the folder /sys(/tiny)? \(.+\): choose "
                                         "one you can write to$"):
        loop.train(from_command_line(["train.py", *args]))
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()  # nothing prepared, nothing left


def test_two_runs_started_together_into_one_out_dir_one_trains_one_stops_in_one_line(tmp_path):
    args = tiny_run_args(tmp_path, max_iters=8)
    # the data is prepared once beforehand: two preparations at once are another matter (data_dir)
    loop.train(from_command_line(["train.py", *tiny_run_args(tmp_path, out="alone", max_iters=12)]))
    runs = [subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, env=program_env(), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    assert sorted(code for code, _, _ in results) == [0, 1]
    _, out, err = next(result for result in results if result[0] == 1)
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"train.py: error: {tmp_path}/out is in use by another run (pid ")
    # the winner's records are one run's, and resuming it goes on exactly as a run that never stopped
    assert [r["iter"] for r in rows(tmp_path / "out") if "loss" in r] == list(range(8))
    loop.train(from_command_line(["train.py", *tiny_run_args(tmp_path, init_from="resume", max_iters=12)]))
    step_losses = [[(r["iter"], r["loss"]) for r in rows(tmp_path / name) if "loss" in r] for name in ("out", "alone")]
    assert step_losses[0] == step_losses[1]
    assert checkpoint.latest_step(tmp_path / "out") == 12


def _catches_signals(pid: int) -> bool:
    """Whether the process has its own handler for SIGTERM and SIGUSR1 (Linux's SigCgt mask)."""
    with open(f"/proc/{pid}/status") as status:
        caught = int(next(line for line in status if line.startswith("SigCgt:")).split()[1], 16)
    return all(caught >> (signum - 1) & 1 for signum in (signal.SIGTERM, signal.SIGUSR1))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum, when", [(signal.SIGINT, "importing"), (signal.SIGUSR1, "importing"),
                                          (signal.SIGTERM, "training a new GPT"), (signal.SIGINT, "writing to")])
def test_a_signal_while_a_run_starts_ends_it_in_one_line_with_nothing_written(tmp_path, signum, when):
    args = tiny_run_args(tmp_path, num_proc=1)
    loop.train(from_command_line(["train.py", *tiny_run_args(tmp_path, out="prepared", max_iters=0)]))
    with subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=program_env({"PYTHONUNBUFFERED": "1"})) as run:
        if when == "importing":
            while not _catches_signals(run.pid):
                time.sleep(0.001)
        else:
            while not run.stdout.readline().startswith(when):
                pass
        run.send_signal(signum)
        out, err = run.communicate(timeout=120)
    assert run.returncode == 128 + signum
    name = signal.Signals(signum).name
    assert err == (f"train.py: stopped by {name} while starting; nothing was written\n" if when == "importing" else
                   f"train.py: stopped by {name} while starting, before any iteration: nothing of the run was "
                   "written\n")
    assert "iter 0" not in out and not (tmp_path / "out").exists()
