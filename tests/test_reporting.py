"""reporting.py: a bar on a terminal, log lines in a pipe, and every record in metrics.jsonl."""

import io
import json
import sys

import pytest

from gptjax.reporting import Reporter

STEP = {"loss": 2.5, "grad_norm": 0.75, "lr": 1e-3, "ms_per_iter": 12.5, "tokens_per_s": 61440.0}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_reporter(path, stdout, monkeypatch, **kwargs) -> str:
    monkeypatch.setattr(sys, "stdout", stdout)
    report = Reporter(path, start=2, total=10, **kwargs)
    report.message("hello")
    report.log_step(2, STEP)
    report.record(iter=3, train_loss=2.0, val_loss=2.25)
    report.close()
    return stdout.getvalue()


def test_a_pipe_gets_plain_log_lines(tmp_path, monkeypatch):
    printed = run_reporter(tmp_path / "metrics.jsonl", io.StringIO(), monkeypatch)
    assert printed == "hello\niter 2: loss 2.5000, time 12.50ms, 61,440 tok/s\n"


def test_a_terminal_gets_a_progress_bar(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    printed = run_reporter(tmp_path / "metrics.jsonl", Terminal(), monkeypatch)
    assert "hello" in printed and "iter 3/10" in printed and "loss 2.5000, 61,440 tok/s" in printed
    assert "iter 2: loss" not in printed  # no log lines under the bar


@pytest.mark.parametrize("stdout", [io.StringIO, Terminal])
def test_every_record_is_a_json_line_with_the_documented_keys(tmp_path, monkeypatch, stdout):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iter": 0, "train_loss": 3.0, "val_loss": 3.0}\n')  # an earlier run's: kept
    run_reporter(path, stdout(), monkeypatch)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [{"iter": 0, "train_loss": 3.0, "val_loss": 3.0}, {"iter": 2, **STEP},
                    {"iter": 3, "train_loss": 2.0, "val_loss": 2.25}]


def test_an_inactive_reporter_prints_and_writes_nothing(tmp_path, monkeypatch):
    assert run_reporter(tmp_path / "metrics.jsonl", io.StringIO(), monkeypatch, active=False) == ""
    assert not (tmp_path / "metrics.jsonl").exists()


def test_the_bars_last_frame_comes_before_the_closing_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdout", Terminal())
    report = Reporter(tmp_path / "metrics.jsonl", start=2, total=10)
    report.log_step(2, STEP)
    report.end_progress()
    report.message("done in 1.0 s")
    report.close()
    printed = sys.stdout.getvalue()
    assert "iter 3/10" in printed and printed.rstrip().endswith("done in 1.0 s")
    assert printed.rindex("iter 3/10") < printed.rindex("done in 1.0 s")


def test_non_finite_values_are_written_as_null_and_the_row_flagged(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    report = Reporter(tmp_path / "metrics.jsonl", start=0, total=10)
    report.record(iter=5, train_loss=float("nan"), val_loss=float("inf"))
    report.record(iter=6, train_loss=2.0, val_loss=2.5)
    report.record(iter=7, val_loss=float("inf"))  # an infinity alone
    report.log_step(8, {**STEP, "loss": float("-inf")})
    report.close()
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert rows[:3] == ['{"iter": 5, "train_loss": null, "val_loss": null, "nonfinite": true}',
                        '{"iter": 6, "train_loss": 2.0, "val_loss": 2.5}',
                        '{"iter": 7, "val_loss": null, "nonfinite": true}']
    assert json.loads(rows[3]) == {"iter": 8, **STEP, "loss": None, "nonfinite": True}
