"""Was a timed block disturbed?  The CPU time other processes used while it ran.

``/proc/stat``'s first line counts, in ticks of 1/``SC_CLK_TCK`` s (10 ms), the time all CPUs spent
busy (user, nice, system, irq, softirq, and steal: time the hypervisor gave our virtual CPU to
someone else).  The busy time over a block, minus this worker's own CPU time (``os.times``: every
thread of the process), is what other processes, or the hypervisor, took: ``other_cpu_s``.
Divided by the block's wall time it reads as "CPUs kept busy by others on average".

Threshold: a block is *disturbed* when others kept more than :data:`THRESHOLD_CPUS` (0.25) of a CPU
busy on average.  On the 2-vCPU machine this was built on, a busy loop on the *other* CPU made a
one-thread matrix product 1.0-1.9x slower (the vCPUs share a physical core or its caches), so any
sustained load counts, whichever CPU it ran on.

Granularity: ticks are sampled, so a reading is uncertain by up to one tick per CPU at each end
(2 x 2 CPUs x 10 ms = 40 ms here; the worker's own time is exact, ``time.process_time``).  A block
must be long enough that this is small against the threshold: the block is a whole training run
(the benchmark's per-round sample, 0.2-10 s), never one epoch (the smallest workloads' epochs last
1-2 ms, a fifth of one tick).  Where a block is so short that the uncertainty exceeds the
threshold, the threshold is raised to it (:attr:`Window.threshold_cpus`): such a block is called
disturbed only when the reading says so beyond doubt.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
THRESHOLD_CPUS = 0.25
"""Other processes' average CPU use (in CPUs) above which a block counts as disturbed."""

BUSY_FIELDS = (0, 1, 2, 5, 6, 7)
"""Columns of ``/proc/stat``'s ``cpu`` line that count as busy: user, nice, system, irq, softirq, steal
(guest time is already inside user; idle and iowait are not busy)."""


def busy_cpu_seconds() -> float | None:
    """Busy CPU seconds of the whole machine since boot (``None`` where ``/proc/stat`` does not exist)."""
    try:
        with PROC_STAT.open() as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return None
    return sum(int(fields[i]) for i in BUSY_FIELDS if i < len(fields)) * TICK_S


def own_cpu_seconds() -> float:
    """CPU seconds of this process (all its threads; exact) and of its finished children (ticks)."""
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


def cpu_count() -> int:
    """CPUs that ``/proc/stat`` sums over (the tick uncertainty grows with them)."""
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Window:
    """One measured block: its wall time and the CPU time others used meanwhile (``None``: not measurable)."""

    wall_s: float
    other_cpu_s: float | None

    @property
    def other_cpus(self) -> float | None:
        """Other processes' average CPU use during the block, in CPUs."""
        if self.other_cpu_s is None or self.wall_s <= 0:
            return None
        return max(self.other_cpu_s, 0.0) / self.wall_s

    @property
    def threshold_cpus(self) -> float:
        """The threshold for this block: :data:`THRESHOLD_CPUS`, or the tick counts' uncertainty if larger."""
        resolution = 2 * cpu_count() * TICK_S / self.wall_s if self.wall_s > 0 else float("inf")
        return max(THRESHOLD_CPUS, resolution)

    @property
    def disturbed(self) -> bool:
        return self.other_cpus is not None and self.other_cpus > self.threshold_cpus

    def to_dict(self) -> dict[str, object]:
        return {"wall_s": self.wall_s, "other_cpu_s": self.other_cpu_s, "other_cpus": self.other_cpus,
                "threshold_cpus": self.threshold_cpus, "disturbed": self.disturbed}


class Measure:
    """Context manager: ``with Measure() as m: ...``; then ``m.window`` describes the block."""

    window: Window

    def __enter__(self) -> Measure:
        self._busy = busy_cpu_seconds()
        self._own = own_cpu_seconds()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._start
        busy = busy_cpu_seconds()
        own = own_cpu_seconds() - self._own
        other = None if busy is None or self._busy is None else (busy - self._busy) - own
        self.window = Window(wall, other)
