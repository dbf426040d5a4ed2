"""CPU slots shared by every rlseg job on one machine, so that jobs started side by side wait instead of
oversubscribing the cores (``snakemake --cores 8`` on a 2-core laptop, two workflows at once).

A slot is a lock file in a per-user folder of the machine's temporary directory, held with ``fcntl.flock``: the
kernel releases it when the process ends however it ends, so a killed job never leaves a slot taken. A job takes
all the slots it needs at once or none (then waits and tries again), so two jobs never hold part of what each
other needs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import tempfile
import time
from pathlib import Path

__all__ = ["hold_cpu_slots", "machine_cpus", "release_cpu_slots", "slots_folder"]

log = logging.getLogger("rlseg")

_held: list[int] = []  # descriptors of the slots this process holds


def machine_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def slots_folder() -> Path:
    """The machine's slot folder for this user (jobs of one user share it; on a cluster, each node has its own)."""
    return Path(tempfile.gettempdir()) / f"rlseg-cpu-slots-{os.getuid()}"


def _try_take(folder: Path, n: int, total: int) -> list[int]:
    taken: list[int] = []
    for i in random.sample(range(total), total):  # random order: waiting jobs do not all contend for slot 0
        fd = os.open(folder / f"slot_{i}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        taken.append(fd)
        if len(taken) == n:
            return taken
    for fd in taken:
        os.close(fd)  # closing drops the lock
    return []


def hold_cpu_slots(n: int, folder: str | os.PathLike | None = None, total: int | None = None,
                   poll: float = 0.25) -> int:
    """Take ``n`` of the machine's ``total`` slots (at most ``total``; default: :func:`machine_cpus`), waiting
    until that many are free; they are held until :func:`release_cpu_slots` or the process's end. Returns the
    number taken."""
    total = total or machine_cpus()
    n = max(1, min(int(n), total))
    folder = Path(folder) if folder else slots_folder()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    t0, said = time.time(), False
    while True:
        taken = _try_take(folder, n, total)
        if taken:
            _held.extend(taken)
            if said:
                log.info("CPU slots: took %d of %d after waiting %.1f s", n, total, time.time() - t0)
            return n
        if not said:
            log.info("CPU slots: other rlseg jobs hold the machine's %d CPUs; waiting for %d (%s)", total, n, folder)
            said = True
        time.sleep(poll * (0.5 + random.random()))


def release_cpu_slots() -> None:
    """Give back every slot this process holds."""
    while _held:
        os.close(_held.pop())
