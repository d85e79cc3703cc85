"""Progress for people and records for programs: a rich progress bar on a terminal, plain log
lines in a pipe or CI, every logged value appended to out_dir/metrics.jsonl and, where asked,
sent to Weights & Biases and written as TensorBoard events: the same values, from one place."""

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from gptjax.errors import UsageError

Sink = Callable[[dict], None]  # takes one record: {"iter": ..., name: value or None, ...}; has close()


def _missing(package: str, key: str, extra: str) -> UsageError:
    return UsageError(f"config.{key} needs the {package} package: pip install {package} (gptjax's {extra} extra)")


class WandbSink:
    """Every record to a Weights & Biases run, its iteration as wandb's step. The run's id is kept
    in out_dir/wandb_id, so that a resumed training run continues the same wandb run; a record of
    an iteration wandb already has (a resume from an older checkpoint) is not logged twice."""

    def __init__(self, out_dir: Path, project: str, run_name: str, config: dict):
        try:
            import wandb
        except ImportError:
            raise _missing("wandb", "wandb_log", "wandb") from None
        id_file = out_dir / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        self._run = wandb.init(project=project, name=run_name, config=config, id=run_id, resume="allow",
                               dir=out_dir)
        id_file.write_text(self._run.id)

    def __call__(self, record: dict) -> None:
        if record["iter"] < self._run.step:
            return
        values = {key: value for key, value in record.items() if key != "iter" and value is not None}
        self._run.log(values, step=record["iter"])

    def close(self) -> None:
        self._run.finish()


class TensorBoardSink:
    """Every numeric value of every record as a TensorBoard scalar (tensorboardX's writer), its
    iteration as the step."""

    def __init__(self, log_dir: Path):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise _missing("tensorboardX", "tensorboard_dir", "tensorboard") from None
        self._writer = SummaryWriter(str(log_dir))

    def __call__(self, record: dict) -> None:
        for key, value in record.items():
            if key != "iter" and isinstance(value, int | float) and not isinstance(value, bool):
                self._writer.add_scalar(key, value, record["iter"])

    def close(self) -> None:
        self._writer.close()


class Reporter:
    """active=False (every process of a multi-host run but the first) makes it silent. `sinks`
    (WandbSink, TensorBoardSink) receive every record metrics.jsonl gets."""

    def __init__(self, metrics_path: Path, start: int, total: int, active: bool = True, sinks: tuple[Sink, ...] = ()):
        self._active = active
        self._sinks = sinks if active else ()
        # kept open for the whole run (closed by close()), so that each record is one write
        self._records = open(metrics_path, "a", encoding="utf-8") if active else None  # noqa: SIM115
        self._progress = None
        if active and sys.stdout.isatty():
            self._progress = Progress(
                TextColumn("iter {task.completed}/{task.total}"), BarColumn(),
                TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
            )
            self._task = self._progress.add_task("train", total=total, completed=start, status="")
            self._progress.start()

    def message(self, text: str) -> None:
        """A line for the reader, printed above the progress bar if there is one."""
        if not self._active:
            return
        if self._progress is not None:
            self._progress.console.print(text, highlight=False, markup=False)
        else:
            print(text, flush=True)

    def record(self, **values) -> None:
        """One row of metrics.jsonl (and of each sink). A value that is not finite is written as
        null, and the row flagged "nonfinite": JSON has no NaN."""
        if not self._active:
            return
        if any(isinstance(v, float) and not math.isfinite(v) for v in values.values()):
            values = {k: None if isinstance(v, float) and not math.isfinite(v) else v
                      for k, v in values.items()} | {"nonfinite": True}
        self._records.write(json.dumps(values, allow_nan=False) + "\n")
        self._records.flush()
        for sink in self._sinks:
            sink(values)

    def log_step(self, it: int, values: dict) -> None:
        """One training step's metrics: recorded, and shown as a log line or in the bar."""
        if not self._active:
            return
        self.record(iter=it, **values)
        loss = "non-finite, update skipped" if values.get("nonfinite") else f"{values['loss']:.4f}"
        text = f"loss {loss}, {values['tokens_per_s']:,.0f} tok/s"
        if self._progress is not None:
            self._progress.update(self._task, completed=it + 1, status=text)
            return
        line = f"iter {it}: loss {loss}, time {values['ms_per_iter']:.2f}ms, {values['tokens_per_s']:,.0f} tok/s"
        if "mfu" in values:
            line += f", mfu {values['mfu'] * 100:.2f}%"
        print(line, flush=True)

    def end_progress(self) -> None:
        """Draw the progress bar's last frame and take it off: later messages go below it."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def close(self) -> None:
        self.end_progress()
        if self._records is not None:
            self._records.close()
        for sink in self._sinks:
            sink.close()
