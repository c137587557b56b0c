"""Ctrl-C and SIGTERM: stop a run so that `pbt resume` continues it, and say where it stopped.

Ray Tune stops gracefully on its own SIGINT handler (it saves the experiment state one last time,
then `fit()` returns as if the run had ended) and ignores SIGTERM, which a batch scheduler or
`kill` sends. pbt replaces that handler around `fit()`: the first SIGINT or SIGTERM asks Tune for
the same graceful stop (through the SIGUSR1 handler Tune installs in `fit()`), a second one stops
at once, and either way an `Interrupted` exception follows, so no partial result is taken for a
finished one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
TUNE_SIGINT_SETTING = "TUNE_DISABLE_SIGINT_HANDLER"
SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

# Tune's own lines on a stop would tell users to call Tuner.restore(...); pbt says `pbt resume`.
TUNE_STOP_LINES = ("Stop signal received", "Trials did not complete", "Experiment has been interrupted")


class Interrupted(KeyboardInterrupt):
    """The run was stopped by `signum`. `where` says how far it got; `resume`, when set, is the
    experiment a `pbt resume` continues."""

    def __init__(self, signum: int = signal.SIGINT, where: str = "", resume: str | None = None) -> None:
        super().__init__(where)
        self.signum, self.where, self.resume = signum, where, resume

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process killed by the signal: 130, 143

    def message(self) -> str:
        stopped = f"stopped by {SIGNAL_NAMES.get(self.signum, signal.Signals(self.signum).name)}"
        where = f" {self.where}" if self.where else ""
        if self.resume is None:
            return f"pbt: {stopped}{where}"
        return f"pbt: {stopped}{where}; the results so far are kept, continue with: pbt resume {self.resume}"


def as_interrupted(error: KeyboardInterrupt, **details: str | None) -> Interrupted:
    """`error` as an `Interrupted` (a plain KeyboardInterrupt is a Ctrl-C), with the details it lacks filled in."""
    stop = error if isinstance(error, Interrupted) else Interrupted(signal.SIGINT)
    for name, value in details.items():
        if value is not None and not getattr(stop, name):
            setattr(stop, name, value)
    return stop


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """SIGTERM raises `Interrupted`, as SIGINT raises KeyboardInterrupt (by default Python dies at
    once on SIGTERM, without a word and without the `pbt resume` line)."""
    def raise_interrupted(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class GracefulStop:
    """Around `Tuner.fit()`: the first SIGINT or SIGTERM makes Tune save its state and return; a
    second raises `Interrupted` at once. `signum` is the first signal received (None: none)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __enter__(self) -> GracefulStop:
        self.previous = {}
        if threading.current_thread() is not threading.main_thread():
            return self  # neither Tune nor pbt can catch signals there
        self.tune_setting = os.environ.get(TUNE_SIGINT_SETTING)
        os.environ[TUNE_SIGINT_SETTING] = "1"  # read by Tune in fit(); ours takes its place
        # Tune's stop handler goes on SIGUSR1 when its loop starts; a stale one from an earlier
        # fit() would stop nothing, so until then a signal stops at once (nothing ran yet).
        self.previous.update({signum: signal.signal(signum, self._stop) for signum in STOP_SIGNALS})
        self.previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        self.quiet = _DropLines(TUNE_STOP_LINES)
        logging.getLogger("ray.tune.tune").addFilter(self.quiet)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        if self.previous:
            logging.getLogger("ray.tune.tune").removeFilter(self.quiet)
            if self.tune_setting is None:
                os.environ.pop(TUNE_SIGINT_SETTING, None)
            else:
                os.environ[TUNE_SIGINT_SETTING] = self.tune_setting

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if self.signum is not None or not callable(tune_stop):
            raise Interrupted(signum)
        self.signum = signum
        name = SIGNAL_NAMES[signum]
        # os.write, not print: a handler may run in the middle of another print to the same stream.
        os.write(2, f"\npbt: {name} received: saving the state of every run so that `pbt resume` can "
                    f"continue it ({name} again stops at once)\n".encode())
        tune_stop(signal.SIGUSR1, frame)


class _DropLines(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)
