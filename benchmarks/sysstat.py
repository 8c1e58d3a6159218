"""What the benchmarks read from Linux's /proc, and CPU pinning.

- ``busy_cpu_seconds()``: CPU time all CPUs have spent not idle since boot.
  Its growth over a window, minus the CPU time of the processes we run,
  is what *other* processes used: the noise measure.
- ``proc_cpu_seconds(pid)``: user + system CPU time of one process, all its
  threads (clock-tick resolution, 10 ms).
- ``rss_kib(pid)``, ``open_fds(pid)``: for the memory benchmark.
- ``proc_counters(pid)``: CPU split into user and system time, page faults
  and context switches of one process (syscount.py).
- ``pinned(cpu)``: a ``preexec_fn`` that pins a child process to one CPU.
"""

import os

TICK = os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds():
    """user + nice + system + irq + softirq + steal, summed over all CPUs."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / TICK


def _stat_fields(pid):
    """/proc/PID/stat (all threads) from field 3 on: ``[i]`` is field i + 3."""
    with open(f"/proc/{pid}/stat") as f:
        # the command name (field 2) may contain spaces: split after it
        return f.read().rsplit(")", 1)[1].split()


def proc_cpu_seconds(pid):
    """CPU seconds used by process ``pid`` so far, or None once it is gone."""
    try:
        after = _stat_fields(pid)
        return (int(after[11]) + int(after[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


def proc_counters(pid):
    """Counters of process ``pid`` so far, or None once it is gone: user and
    system CPU seconds, minor and major page faults (all threads, from
    /proc/PID/stat), voluntary and involuntary context switches (summed over
    /proc/PID/task/*/status: a thread that has exited takes its count away)."""
    try:
        after = _stat_fields(pid)
        out = {"user_s": int(after[11]) / TICK, "sys_s": int(after[12]) / TICK,
               "minflt": int(after[7]), "majflt": int(after[9]), "vcsw": 0, "ivcsw": 0}
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        out["vcsw" if line[0] == "v" else "ivcsw"] += int(line.split()[1])
        return out
    except (OSError, IndexError, ValueError):
        return None


def rss_kib(pid):
    """Resident set size of ``pid`` in KiB, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def open_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def can_pin():
    return hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2


def pinned(cpu):
    """preexec_fn for subprocess: run the child on CPU ``cpu`` only (or
    anywhere when cpu is None)."""
    if cpu is None:
        return None

    def pin():
        os.sched_setaffinity(0, {cpu})

    return pin
