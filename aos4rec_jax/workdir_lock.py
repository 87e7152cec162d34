"""One process per workdir: an exclusive lock on WORKDIR/.lock, held while a run trains.

The lock is an `fcntl.flock` on an open file: the operating system releases it when the process
ends in any way (exit, exception, SIGKILL), so a killed run never blocks its own resume. A second
`main.py` on the same workdir gets RunError at once, naming the PID written by the holder.
"""
from __future__ import annotations

import contextlib
import fcntl
import os

from aos4rec_jax.methods.base import RunError


@contextlib.contextmanager
def hold(workdir: str):
    """Holds the workdir's lock for the `with` block; RunError if another process holds it."""
    path = os.path.join(workdir, '.lock')
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                with open(path) as f:
                    holder = f.read().strip() or 'unknown'
            except OSError:
                holder = 'unknown'
            raise RunError(f'{workdir} is in use by another run (process {holder}); wait for it to '
                           'finish or stop it, or use another --workdir') from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)             # releases the lock (if it was taken)
