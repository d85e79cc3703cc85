"""What the programs do on Ctrl-C (SIGINT), SIGTERM (a scheduler, a preemption) and SIGUSR1:
while a program starts, stop it at once in one line; once a training run is under way, ask it to
save and stop after the current step. Signal handlers belong to the process: the programs
install them, never the library. Imports no JAX."""

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import NoReturn

from gptjax.errors import program_name

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def exit_status(signum: int) -> int:
    """The status a shell reads as "ended by this signal": 128 + its number (130 for Ctrl-C)."""
    return 128 + signum


def _exit_at_once(signum: int, frame=None, after: str = " while starting; nothing was written") -> None:
    name = signal.Signals(signum).name
    os.write(2, f"{program_name(sys.argv[0])}: stopped by {name}{after}\n".encode())
    os._exit(exit_status(signum))


def exit_at_once_on_signal() -> None:
    """For a program that keeps nothing a stop would lose (sampling, explaining): a signal ends
    it at once with one line and the status 128 + n, whatever it is doing. Python runs its own
    handlers only between bytecodes, which a compilation or a computation on the device holds
    back for as long as it lasts, and exiting normally waits for that computation; so a thread
    woken by the signal itself (signal.set_wakeup_fd) ends the process."""
    for signum in SIGNALS:  # set_wakeup_fd hears only of signals that have a Python handler
        signal.signal(signum, lambda signum, frame: _exit_at_once(signum, after=""))
    _act_on_signals(lambda signum: _exit_at_once(signum, after=""), "exit on a signal")


def _act_on_signals(act: Callable[[int], None], name: str) -> tuple[int, int]:
    """A thread that calls act(signum) for each signal the process receives, as it arrives (from
    a pipe the signal's C handler writes to: signal.set_wakeup_fd), whatever the main thread is
    doing. Returns the wakeup fd it replaced and the pipe's write end; closing that ends the
    thread."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def watch() -> None:
        with open(read_end, "rb", buffering=0) as pipe:
            while data := pipe.read(1):
                act(data[0])

    threading.Thread(target=watch, daemon=True, name=name).start()
    return signal.set_wakeup_fd(write_end, warn_on_full_buffer=False), write_end


def exit_at_once_while_importing() -> None:
    """Until the program installs its own handlers, a signal ends it at once with one line: it has
    only been importing its modules (seconds for JAX), and has written nothing."""
    for signum in SIGNALS:
        signal.signal(signum, _exit_at_once)


class Stopped(KeyboardInterrupt):
    """A signal that came while a training run prepared its data, or just before its loop began:
    raised where the program was, so that it ends at once (data preparation keeps its work)."""


class StopRequest:
    """A training program's signal handlers (`with StopRequest() as stop:`). While the run starts
    (reading the data, building or restoring the model, compiling), a thread woken by the signal
    itself (signal.set_wakeup_fd) ends the process at once, in one line, after calling what
    undo_on_exit() registered: Python's own handlers run only between bytecodes, which a
    compilation or a device computation holds back for as long as it lasts. During data
    preparation (only_asking) the signal only asks, and the preparation stops between its tasks.
    Once the training loop begins (started()), a signal becomes a request that the loop honours
    after the current step or evaluation batch: it saves, flushes its records and returns; a
    second Ctrl-C then raises KeyboardInterrupt and stops at once, without saving."""

    def __init__(self, program: str | None = None):
        self.program = program or program_name(sys.argv[0])  # as the user ran it, to begin its lines
        self.signal: int | None = None
        self.starting = True
        self._previous = {}
        self._undo: list[Callable[[], None]] = []  # what a stop while starting takes back
        self._ending = threading.Lock()  # the thread's ending, and the loop's beginning: one at a time
        self._said = False  # the line that ends the program was printed
        self._wakeup: tuple[int, int] | None = None

    def undo_on_exit(self, undo: Callable[[], None]) -> None:
        """undo is called when a stop while starting ends the process from the signal's thread,
        which skips the finally blocks that would otherwise call it."""
        self._undo.append(undo)

    def end_starting(self) -> NoReturn:
        """Say, once, that a signal stopped the run while it started, and exit with its status."""
        with self._ending:
            self._say(self._starting_line())
        sys.exit(exit_status(self.signal))

    def _starting_line(self) -> str:
        name = signal.Signals(self.signal).name
        return (f"{self.program}: stopped by {name} while starting, before any iteration: nothing "
                "of the run was written")

    def _say(self, line: str) -> None:
        if not self._said:
            os.write(2, (line + "\n").encode())
            self._said = True

    def _act(self, signum: int) -> None:
        """What the signal's thread does with a signal: while starting, end the program at once."""
        with self._ending:
            if not (self.starting and signum in SIGNALS):
                return  # the program prepares its data, or runs its loop: it acts itself
            self.signal = self.signal or signum
            for undo in self._undo:
                with contextlib.suppress(Exception):
                    undo()
            self._say(self._starting_line())
            os._exit(exit_status(self.signal))

    def request(self, signum: int, frame=None) -> None:
        if signum == signal.SIGINT and self.signal == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, without saving
        self.signal = signal.SIGINT if signum == signal.SIGINT else self.signal or signum

    @contextlib.contextmanager
    def only_asking(self) -> Iterator[Callable[[], str | None]]:
        """Within, for work that checks for a stop by itself and stops cleanly (data preparation:
        between its tasks), a signal only asks: the callable given says why, or None. A signal
        that the work did not act on stops the start-up when it ends."""
        self.starting = False
        wakeup = signal.set_wakeup_fd(-1)  # the signal's thread hears of none: the work acts itself
        try:
            yield self.reason
        finally:
            signal.set_wakeup_fd(wakeup, warn_on_full_buffer=False)
            self.starting = True
        if self.signal is not None:
            raise Stopped(self.reason())

    def started(self) -> None:
        """Start-up is over: from now on a signal asks the loop to save and stop. A signal that
        came just before stops the run here."""
        with self._ending:
            if self.signal is not None:
                raise Stopped(self.reason())
            self.starting = False
            signal.set_wakeup_fd(-1)  # from now on the loop acts on a signal itself

    def reason(self) -> str | None:
        """Why the program was asked to stop ("SIGTERM received"), or None."""
        return None if self.signal is None else f"{signal.Signals(self.signal).name} received"

    def __enter__(self) -> "StopRequest":
        self._previous = {signum: signal.signal(signum, self.request) for signum in SIGNALS}
        self._wakeup = _act_on_signals(self._act, "stop while starting")
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._wakeup is not None:
            previous, write_end = self._wakeup
            signal.set_wakeup_fd(previous)
            os.close(write_end)  # the thread reads the end of its pipe and returns
            self._wakeup = None
