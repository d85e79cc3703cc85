"""Progress for people and records for programs: a rich progress bar on a terminal, plain log
lines in a pipe or CI, and every logged value appended to out_dir/metrics.jsonl."""

import json
import sys
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn


class Reporter:
    """active=False (every process of a multi-host run but the first) makes it silent."""

    def __init__(self, metrics_path: Path, start: int, total: int, active: bool = True):
        self._active = active
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
        if not self._active:
            return
        self._records.write(json.dumps(values) + "\n")
        self._records.flush()

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

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._records is not None:
            self._records.close()
