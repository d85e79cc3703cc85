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
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def watch() -> None:
        _exit_at_once(os.read(read_end, 1)[0], after="")

    threading.Thread(target=watch, daemon=True, name="exit on a signal").start()
    for signum in SIGNALS:  # set_wakeup_fd hears only of signals that have a Python handler
        signal.signal(signum, lambda signum, frame: _exit_at_once(signum, after=""))
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)


def exit_at_once_while_importing() -> None:
    """Until the program installs its own handlers, a signal ends it at once with one line: it has
    only been importing its modules (seconds for JAX), and has written nothing."""
    for signum in SIGNALS:
        signal.signal(signum, _exit_at_once)


class Stopped(KeyboardInterrupt):
    """A signal received while a training run was starting: raised where the program was, so that
    it ends at once (finally blocks undo what start-up began; data preparation keeps its work)."""


class StopRequest:
    """A training program's signal handlers (`with StopRequest() as stop:`). While the run starts
    (data, model, compiling), a signal raises Stopped where the program is. Once the training
    loop begins (started()), a signal becomes a request that the loop honours after the current
    step: it saves, flushes its records and returns; a second Ctrl-C then raises KeyboardInterrupt
    and stops at once, without saving."""

    def __init__(self):
        self.signal: int | None = None
        self.starting = True
        self._previous = {}

    def request(self, signum: int, frame=None) -> None:
        if signum == signal.SIGINT and self.signal == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, without saving
        self.signal = signal.SIGINT if signum == signal.SIGINT else self.signal or signum
        if self.starting:
            raise Stopped(self.reason())

    @contextlib.contextmanager
    def only_asking(self) -> Iterator[Callable[[], str | None]]:
        """Within, for work that checks for a stop by itself and stops cleanly (data preparation:
        between its tasks), a signal only asks: the callable given says why, or None. A signal
        that the work did not act on stops the start-up when it ends."""
        self.starting = False
        try:
            yield self.reason
        finally:
            self.starting = True
        if self.signal is not None:
            raise Stopped(self.reason())

    def started(self) -> None:
        """Start-up is over: from now on a signal asks the loop to save and stop. A signal that
        came while starting but whose exception some library swallowed stops the run here."""
        if self.signal is not None:
            raise Stopped(self.reason())
        self.starting = False

    def reason(self) -> str | None:
        """Why the program was asked to stop ("SIGTERM received"), or None."""
        return None if self.signal is None else f"{signal.Signals(self.signal).name} received"

    def __enter__(self) -> "StopRequest":
        self._previous = {signum: signal.signal(signum, self.request) for signum in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
