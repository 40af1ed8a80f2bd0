"""
Child processes of the benchmark harness: started in their own process
group, remembered, and always killed at the end.

Every process the harness starts (target servers, proxies, load generators)
goes through L{spawn}, so that L{stopAll} (registered with C{atexit}, and
called again from the harness's C{finally}) can end each group by its id.
"""

from __future__ import annotations

import atexit
import os
import resource
import signal
import subprocess
import time
from typing import Any

_started: list[subprocess.Popen] = []


def raiseFileLimit() -> int:
    """
    Raise this process's soft C{RLIMIT_NOFILE} to its hard limit, so that
    the children started afterwards inherit it.

    @return: the new soft limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def glueOption(argv: list[str], option: str) -> list[str]:
    """
    Glue the value of C{option} to it (C{--socksd-args '--no-splice'}
    would otherwise read as an unknown option), so that it may start with a
    dash.
    """
    glued: list[str] = []
    for argument in argv:
        if glued and glued[-1] == option:
            glued[-1] = f"{option}={argument}"
        else:
            glued.append(argument)
    return glued


def spawn(command: list[str], **kwargs: Any) -> subprocess.Popen:
    """
    Start C{command} as the leader of a new process group and remember it.

    @param kwargs: passed on to L{subprocess.Popen}.
    """
    process = subprocess.Popen(command, start_new_session=True, **kwargs)
    _started.append(process)
    return process


def stop(process: subprocess.Popen, grace: float = 3.0) -> None:
    """
    End C{process} and every process of its group: C{SIGTERM}, then
    C{SIGKILL} after C{grace} seconds.
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        if process.poll() is not None:
            # The leader is gone; make sure no member of its group stays.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            break
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    if process in _started:
        _started.remove(process)


def stopAll() -> None:
    """
    Stop every process started with L{spawn} and not stopped yet.
    """
    for process in list(reversed(_started)):
        stop(process, grace=1.0)


atexit.register(stopAll)


def _statFields(pid: str | int) -> list[str] | None:
    """
    The fields of C{/proc/PID/stat} after the command name (so field 3 of
    stat(5), the state, is the first), or L{None} for a process gone.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces.
    return stat[stat.rfind(")") + 2 :].split()


def processTree(pid: int) -> list[int]:
    """
    List C{pid} and all its descendants (read from C{/proc}).
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _statFields(entry)
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo and len(tree) < 100_000:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpuSecondsOf(pid: int) -> float:
    """
    The CPU time (user and system) of C{pid} and its descendants so far,
    with what their children that ended and were waited for used, in
    seconds.
    """
    ticks = 0
    for member in processTree(pid):
        fields = _statFields(member)
        if fields is not None:
            # utime, stime, cutime, cstime: fields 14-17 of stat(5).
            ticks += sum(int(value) for value in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _statusKilobytes(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pssKilobytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memoryOf(pid: int) -> dict[str, int]:
    """
    Measure the memory of C{pid} and its descendants.

    @return: C{rssKiB}, the sum of C{VmRSS} from C{/proc/PID/status};
        C{pssKiB}, the sum of C{Pss} from C{/proc/PID/smaps_rollup} (which
        counts shared pages once, fairer for a forking server); and
        C{processes}, how many processes were summed.
    """
    tree = processTree(pid)
    return {
        "rssKiB": sum(_statusKilobytes(p, "VmRSS") for p in tree),
        "pssKiB": sum(_pssKilobytes(p) for p in tree),
        "processes": len(tree),
    }
