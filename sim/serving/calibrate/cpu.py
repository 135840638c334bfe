"""A real model server's CPU, read from the local kernel: a process tree or a cgroup.

Calibration through an endpoint and ``scalelab fidelity`` read the same sources; only
differences over a window count, so the origin of the cumulative figure does not matter.
A pod's CPU through the Kubernetes API is :mod:`sim.serving.calibrate.podcpu`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from sim.errors import UserError
from sim.serving.calibrate.host import usable_cpus

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class CpuError(UserError):
    """A CPU source that cannot be read; the message names the file and why."""


class CpuSource(Protocol):
    """The server's cumulative CPU time; differences over a window give its cores."""

    @property
    def description(self) -> str:
        """Where the figure comes from, in words, for a profile's provenance."""
        ...

    @property
    def resolution_s(self) -> float:
        """Seconds between the figure's updates (0: exact at every read, as the kernel's)."""
        ...

    @property
    def lag_s(self) -> float:
        """Seconds after a change of load before the figure reflects it (0: at once)."""
        ...

    def seconds(self) -> float:
        """CPU seconds used so far (any origin: only differences count)."""
        ...


def _stat(pid: int) -> tuple[int, float]:
    """(ppid, utime + stime + cutime + cstime in seconds) from /proc/PID/stat (proc(5))."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    ticks = sum(int(v) for v in fields[11:15])  # fields 14-17: utime stime cutime cstime
    return int(fields[1]), ticks / _CLK_TCK


class ProcessCpu:
    """A process tree's CPU from /proc: the process (all its threads: /proc/PID/stat sums them),
    its reaped children (cutime/cstime) and its live descendants."""

    resolution_s = 0.0
    lag_s = 0.0

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            _stat(pid)
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError, IndexError) as err:
            raise CpuError(f"cannot read the CPU time of process {pid}: {err}") from None
        self.description = (
            f"/proc/{pid}/stat utime + stime of process {pid} ({comm}) and its descendants"
        )

    def seconds(self) -> float:
        stats: dict[int, tuple[int, float]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    stats[int(entry.name)] = _stat(int(entry.name))
                except (OSError, ValueError, IndexError):  # gone meanwhile
                    continue
        if self.pid not in stats:
            raise CpuError(f"process {self.pid} is gone; its CPU time cannot be read")
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        total, todo = 0.0, [self.pid]
        while todo:
            pid = todo.pop()
            total += stats[pid][1]
            todo += children.get(pid, [])
        return total


def busy_cpu_seconds() -> float | None:
    """CPU-seconds the CPUs this process may run on have spent busy since boot (/proc/stat),
    None where unknown: other processes on CPUs outside the affinity do not disturb it."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    mine = {f"cpu{i}" for i in usable_cpus()}
    ticks = 0
    for line in lines:
        fields = line.split()
        if fields and fields[0] in mine:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
            ticks += user + nice + system + irq + softirq + steal
    return ticks / _CLK_TCK


class OthersCpu:
    """What the rest of this machine burns: the busy time of the CPUs this process may run on
    less ``server``'s (stolen time included). A server on this machine shares it with the load
    generator and the OS; ``scalelab fidelity`` gives the simulated server what they left."""

    resolution_s = 1.0 / _CLK_TCK
    lag_s = 0.0

    def __init__(self, server: CpuSource) -> None:
        self.server = server
        self.description = f"/proc/stat busy time of CPUs {usable_cpus()} less the server's"
        self.seconds()

    def seconds(self) -> float:
        busy = busy_cpu_seconds()
        if busy is None:
            raise CpuError("cannot read /proc/stat: the machine's busy time is unknown")
        return busy - self.server.seconds()


class CgroupCpu:
    """A cgroup's CPU: v2 ``cpu.stat`` ``usage_usec``, or v1 ``cpuacct.usage`` (nanoseconds).
    ``path`` is the cgroup's directory or one of those files."""

    resolution_s = 0.0
    lag_s = 0.0

    def __init__(self, path: Path) -> None:
        path = Path(path)
        candidates = [path] if path.is_file() else [path / "cpu.stat", path / "cpuacct.usage"]
        for candidate in candidates:
            if candidate.is_file():
                self.path = candidate
                break
        else:
            raise CpuError(
                f"no cgroup CPU accounting at {path}: no cpu.stat (cgroup v2) or cpuacct.usage "
                "(v1) there; give the cgroup's directory, e.g. "
                "/sys/fs/cgroup/kubepods.slice/.../<container>"
            )
        v1 = self.path.name == "cpuacct.usage"
        self.description = f"cgroup v1 {self.path} (ns)" if v1 else f"cgroup v2 {self.path}"
        self.seconds()

    def seconds(self) -> float:
        try:
            text = self.path.read_text()
        except OSError as err:
            raise CpuError(f"cannot read {self.path}: {err}") from None
        if self.path.name == "cpuacct.usage":
            return int(text.split()[0]) / 1e9
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
        raise CpuError(f"{self.path} has no usage_usec line")
