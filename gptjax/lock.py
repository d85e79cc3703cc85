"""One writer per run directory: a training run holds out_dir/run.lock while it runs, so that a
second run into the same out_dir stops at once instead of damaging the first one's checkpoints
and records. The lock is an flock(2) on that file, which the system lets go of however the
holder ends (SIGKILL, a crash): a lock left by a process that no longer runs is taken over."""

import contextlib
import datetime
import fcntl
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

from gptjax.errors import UsageError, cannot_write

LOCK_FILE = "run.lock"


def _holder(fd: int) -> dict | None:
    """Who the lock file says holds it (host, pid, since), or None when it says nothing."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", errors="replace")
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return None
    return holder if isinstance(holder, dict) else None


def _describe(holder: dict | None) -> str:
    if holder is None:
        return "a process that left no name"
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}"


class RunLock:
    """Holds out_dir/run.lock from acquire() to release(). acquire() makes out_dir (or says in one
    line why it cannot be written) and raises UsageError naming the holder when another process
    holds the lock. release() empties the file and lets go; a run that made out_dir and left
    nothing else in it (it stopped while starting) removes it again."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir).absolute()
        self._fd: int | None = None
        self._made_dir = False

    def acquire(self, note: Callable[[str], None] = print) -> None:
        """Take the lock; `note` hears, in one line, of a lock taken over from a process that ended."""
        path = self.out_dir / LOCK_FILE
        try:
            self.out_dir.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                self.out_dir.mkdir()
                self._made_dir = True
            while self._fd is None:
                try:
                    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                except FileNotFoundError:  # removed by a run that let go just then
                    self.out_dir.mkdir(exist_ok=True)
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _holder(fd)
                    os.close(fd)
                    raise UsageError(f"{self.out_dir} is in use by another run ({_describe(holder)}): wait for "
                                     "it to end or stop it, or choose another out_dir") from None
                if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
                    self._fd = fd
                else:
                    os.close(fd)  # the file was removed by a run that let go just then: lock the new one
            previous = _holder(self._fd)
            since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)
            os.write(self._fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": since}).encode())
            os.fsync(self._fd)
        except OSError as e:
            self.release()
            raise cannot_write(self.out_dir, "config.out_dir", e) from None
        if previous is not None:
            note(f"{self.out_dir} was locked by {_describe(previous)}, which no longer runs: "
                 "the lock is taken over")

    def release(self) -> None:
        """Let go of the lock (nothing when not held)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            if self._made_dir and os.listdir(self.out_dir) == [LOCK_FILE]:  # nothing written: leave nothing
                with contextlib.suppress(OSError):
                    os.unlink(self.out_dir / LOCK_FILE)
            os.close(self._fd)
            self._fd = None
        if self._made_dir:
            with contextlib.suppress(OSError):
                self.out_dir.rmdir()  # only when empty
            self._made_dir = False
