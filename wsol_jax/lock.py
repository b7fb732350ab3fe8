"""One command per workdir: `<workdir>/.lock`, held (flock) from start to end by the command that
uses it, describes its holder (pid, host, start, command line) for the one-line error of a second
command; the kernel releases it when its holder exits or dies, so no stale lock is left behind."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from typing import Iterator, Optional

import numpy as np

from wsol_jax import parallel
from wsol_jax.errors import WorkdirError
from wsol_jax.workdir import LOCK, WRITE_ERRNOS, path


# Re-entrant use in one process (a library call that runs `wsol_jax.run.run` inside another):
# the process holds each workdir's lock once; `flock` on a second descriptor would wait for itself.
_HELD: dict[str, list] = {}
_HELD_GUARD = threading.Lock()


def _holder(fd: int) -> str:
    """What the lock file says about the process that holds it."""
    try:
        info = json.loads(os.pread(fd, 65536, 0).decode() or '{}')
    except (OSError, ValueError):
        info = {}
    if not info:
        return 'another process'
    return f'pid {info.get("pid")} on {info.get("host")} since {info.get("started")} ({info.get("command", "?")})'


def _acquire(workdir: str) -> Optional[int]:
    """The descriptor of `<workdir>/.lock`, locked by this process; None where the lock file cannot
    be made (a workdir that nobody can write: nothing to protect)."""
    file = path(workdir, LOCK)
    try:
        fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        if e.errno in WRITE_ERRNOS:
            return None
        raise
    try:
        # The kernel drops a flock when its holder dies: a killed run leaves no stale lock.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise WorkdirError(
            f'{workdir} is in use by {holder}; wait for it to finish (or stop it), or use another --workdir'
        ) from None
    except OSError as e:  # a filesystem without locks (some network mounts): run, but say so
        os.close(fd)
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        print(f'[workdir] note: {workdir} cannot be locked ({e.strerror}); nothing stops a second command on it')
        return None
    info = {
        'pid': os.getpid(),
        'host': socket.gethostname(),
        'started': time.strftime('%Y-%m-%d %H:%M:%S'),
        'command': ' '.join([os.path.basename(sys.executable)] + sys.argv),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return fd


def _enter(key: str) -> list:
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is None:
            held = _HELD[key] = [_acquire(key), 0]
        held[1] += 1
        return held


def _leave(key: str, held: list) -> None:
    with _HELD_GUARD:
        held[1] -= 1
        if held[1] == 0:
            del _HELD[key]
            if held[0] is not None:
                os.ftruncate(held[0], 0)  # no stale holder described after it is released
                os.close(held[0])  # closing releases the flock


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
    """Hold `<workdir>/.lock` for the block: a second command on the same workdir stops at once
    with `WorkdirError` naming the holder's pid and command; the lock goes with its holder (any
    exit, a kill included). Only process 0 of a multi-host run takes it (the hosts share the
    workdir), and every process must enter the block: they all stop when process 0 cannot lock.
    A workdir that does not exist yet is not locked."""
    key = os.path.realpath(workdir)
    held, error = None, None
    if parallel.is_chief() and os.path.isdir(key):
        try:
            held = _enter(key)
        except WorkdirError as e:
            error = e
    if parallel.sum_over_processes(np.int32(error is not None)) and error is None:
        error = WorkdirError(f'{workdir} is in use by another command (process 0 could not lock it)')
    if error is not None:
        raise error
    try:
        yield
    finally:
        if held is not None:
            _leave(key, held)
