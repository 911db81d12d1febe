"""A watchdog that ends a local Ray's processes when the driver that started them dies.

Ray's own reaper stops the GCS and raylet when the driver is SIGKILLed, but some
of their children (the dashboard agent, the runtime-env agent) were measured to
outlive it for good. :func:`start` forks this watchdog (``python -m
raysweep.sweep.reaper DRIVER_PID``) when ``init_ray`` starts a local Ray. It
holds the read end of a pipe whose write end only the driver has; every two
seconds it notes the driver's Ray descendants (pid and start time, so a reused
pid is never touched). When the pipe closes (the driver exited, however) it
sends SIGTERM to those still alive, then SIGKILL after five seconds, and exits.
Linux only (it reads /proc); elsewhere :func:`start` does nothing.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

# command-line markers of Ray's processes (only these are ever signalled)
RAY_MARKERS = ("raylet", "gcs_server", "ray::", "ray/_private", "ray/dashboard",
               "default_worker.py", "runtime_env", "dashboard_agent", "log_monitor", "monitor.py")


def start() -> subprocess.Popen | None:
    """Fork the watchdog for this process (the driver); None where /proc is missing."""
    if not os.path.isdir("/proc/self/task"):
        return None
    return subprocess.Popen([sys.executable, "-m", "raysweep.sweep.reaper", str(os.getpid())],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process, or None."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[1]), fields[19]) if fields[0] != "Z" else None


def _is_ray(pid: int) -> bool:
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
    except OSError:
        return False
    return any(m in cmd for m in RAY_MARKERS)


def ray_descendants(root: int) -> dict[int, str]:
    """pid -> start time of every live Ray process below ``root``."""
    stats = {int(d): s for d in os.listdir("/proc") if d.isdigit() and (s := _stat(int(d)))}
    out, todo = {}, [root]
    while todo:
        p = todo.pop()
        for child, (parent, started) in stats.items():
            if parent == p and child not in out:
                todo.append(child)
                if _is_ray(child):
                    out[child] = started
    return out


def _end(seen: dict[int, str]) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        alive = [p for p, t in seen.items() if (s := _stat(p)) and s[1] == t]
        for p in alive:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        t0 = time.monotonic()
        while alive and time.monotonic() - t0 < wait:
            time.sleep(0.2)
            alive = [p for p in alive if (s := _stat(p)) and s[1] == seen[p]]


def main(driver: int) -> None:
    seen: dict[int, str] = {}
    while True:
        seen.update(ray_descendants(driver))
        ready, _, _ = select.select([sys.stdin], [], [], 2.0)
        if ready and not os.read(sys.stdin.fileno(), 1):  # EOF: the driver is gone
            break
    _end(seen)


if __name__ == "__main__":
    main(int(sys.argv[1]))
