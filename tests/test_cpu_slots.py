"""CPU slots: jobs side by side wait for the machine's CPUs instead of oversubscribing them, and a killed job's
slots come free."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from rlseg import cpu_slots
from rlseg.cpu_slots import hold_cpu_slots, release_cpu_slots


def test_a_job_waits_until_the_slots_it_needs_are_free(tmp_path):
    assert hold_cpu_slots(1, tmp_path, total=2) == 1
    got = []
    # a second holder (another open file, as another process has): wants both slots, so it waits
    waiter = threading.Thread(target=lambda: got.append(_take_in_child(tmp_path, 2, 2)))
    waiter.start()
    time.sleep(1.0)
    assert not got
    release_cpu_slots()
    waiter.join(30)
    assert got == [2]


def _take_in_child(folder, n, total) -> int:
    code = (f"from rlseg.cpu_slots import hold_cpu_slots; print(hold_cpu_slots({n}, {str(folder)!r}, total={total}, "
            "poll=0.05))")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout)


def test_more_threads_than_cpus_take_every_slot_not_more(tmp_path):
    try:
        assert hold_cpu_slots(8, tmp_path, total=2) == 2
        assert cpu_slots._try_take(tmp_path, 1, 2) == []
    finally:
        release_cpu_slots()
    both = cpu_slots._try_take(tmp_path, 2, 2)
    assert len(both) == 2
    for fd in both:
        os.close(fd)


def test_a_killed_job_leaves_no_slot_taken(tmp_path):
    code = (f"from rlseg.cpu_slots import hold_cpu_slots; hold_cpu_slots(1, {str(tmp_path)!r}, total=1); "
            "print('held', flush=True); import time; time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert cpu_slots._try_take(tmp_path, 1, 1) == []
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    t0 = time.time()
    assert _take_in_child(tmp_path, 1, 1) == 1 and time.time() - t0 < 20
