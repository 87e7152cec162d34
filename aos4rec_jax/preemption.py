"""SIGTERM and SIGINT as normal events of a run (docs/reliability.md, "Preemption").

While a run trains, `Watcher` turns SIGTERM (a scheduler's preemption notice: SLURM, Kubernetes,
TPU maintenance) and SIGINT (Ctrl-C) into a request the trainer reads after every step
(`requested(step)`): the trainer finishes the step, saves it, waits for the async saves and
raises `Stopped`, which main.py prints as one line and turns into exit status 143 / 130
(128 + the signal number, as a shell reports a process killed by it). A second Ctrl-C stops at
once (KeyboardInterrupt); the saved checkpoints are intact.

Multi-host (`jax.distributed` initialised): the processes must save the same step, so SIGTERM is
left to JAX's preemption service (its notifier catches the signal on any host) and
`requested(step)` asks `multihost_utils.reached_preemption_sync_point(step)`, which is true on
every process at the same step. Ctrl-C there stops at once (KeyboardInterrupt, no save: the
processes could not agree on a step); main.py prints one line and exits 130.

After training (evaluation, summary) `immediate()` makes both signals raise `Stopped` at once:
the checkpoints are complete, and the rerun only evaluates again.
"""
from __future__ import annotations

import signal
import threading

import jax


class Stopped(Exception):
    """The run stopped on a signal after saving; `exit_code` is 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _multi_host() -> bool:
    from jax._src import distributed
    return jax.process_count() > 1 and distributed.global_state.client is not None


class Watcher:
    """Context manager: installs the handlers on entry (main thread only; elsewhere it watches
    nothing) and restores the previous ones on exit."""

    def __init__(self):
        self.signum = None          # the first signal received
        self._immediate = False
        self._old = {}
        self._multi = False

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        self._multi = _multi_host()
        if self._multi:             # SIGTERM: JAX's notifier; Ctrl-C: KeyboardInterrupt, no save
            return self
        for s in (signal.SIGTERM, signal.SIGINT):
            self._old[s] = signal.getsignal(s)
            signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}
        return False

    def _handle(self, signum, frame):
        if self._immediate:
            raise Stopped(f'stopped by {signal_name(signum)} after training; the checkpoints are '
                          'complete: rerun the same command to evaluate', signum)
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt          # a second Ctrl-C: stop now
        if self.signum is None:
            self.signum = signum
            print(f'{signal_name(signum)} received: finishing the step, then saving and stopping'
                  + (' (Ctrl-C again to stop at once)' if signum == signal.SIGINT else ''), flush=True)

    def requested(self, step: int):
        """The signal number to stop on after `step`, or None. On several hosts every process
        gets the same answer at the same step (JAX's preemption sync point)."""
        if self._multi:
            from jax.experimental import multihost_utils
            return signal.SIGTERM if multihost_utils.reached_preemption_sync_point(int(step)) else None
        return self.signum

    def immediate(self) -> None:
        """From now on a signal stops the run at once (training is over and saved)."""
        if self.signum is not None:
            raise Stopped(f'stopped by {signal_name(self.signum)} at the end of training; the '
                          'checkpoints are complete: rerun the same command to evaluate',
                          self.signum)
        self._immediate = True
