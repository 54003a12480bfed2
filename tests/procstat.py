"""What /proc says about processes and the machine: CPU time, peak memory, and how busy the
rest of the machine is. Linux only (the bench runs on Linux VMs)."""

import os
import time
from pathlib import Path


def machine_busy_seconds() -> float:
    """CPU time all processes on the machine have used since boot (every core, /proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU time this (bench) process has used."""
    times = os.times()
    return times.user + times.system


class OtherLoad:
    """Measures how busy the rest of the machine is: CPU used by processes other than this one
    and `pids`, from construction to `cores()`, in cores (0.0 on an otherwise idle machine)."""

    def __init__(self, *pids: int) -> None:
        self._pids = pids
        self._started = time.perf_counter()
        self._machine = machine_busy_seconds()
        self._ours = self._our_cpu()

    def _our_cpu(self) -> float:
        return own_cpu_seconds() + sum(cpu_seconds(pid) for pid in self._pids)

    def cores(self) -> float:
        others = (machine_busy_seconds() - self._machine) - (self._our_cpu() - self._ours)
        return round(max(0.0, others) / (time.perf_counter() - self._started), 2)


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
