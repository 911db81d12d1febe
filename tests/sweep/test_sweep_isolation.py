"""A local `raysweep run` is unreachable from the network: its Ray listens on loopback only.

Ray 2.60's services bind every interface; `raysweep run` without --address first moves
itself into a network namespace whose only interface is loopback (raysweep.sweep.run.
isolate_network). Checked from outside, on a real CLI run in a subprocess: every socket
its processes listen on is a loopback address, and none is in this (the host's) namespace.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml

STUDY = {"version": 1, "name": "iso", "backend": "simulated", "sizes": ["2x32"],
         "tokens_per_param": [10, 20], "seeds": [0, 1],
         "representations": [{"name": "dense"}], "simulated": {"sleep_s": 2.0}}


def _listening(pid: int) -> list[tuple[str, int]]:
    """LISTEN sockets as the process's own network namespace sees them (/proc/PID/net)."""
    out = []
    for name in ("tcp", "tcp6"):
        try:
            lines = open(f"/proc/{pid}/net/{name}").read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] != "0A":  # TCP_LISTEN
                continue
            addr, port = f[1].split(":")
            out.append((addr, int(port, 16)))
    return out


def _descendants(root: int) -> list[int]:
    """Every live descendant of ``root`` (from /proc/*/stat's parent pids)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            parent[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def _cmdline(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000",
                "0000000000000000FFFF00000100007F"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="network namespaces: Linux")
def test_local_run_listens_on_loopback_only(tmp_path):
    path = tmp_path / "iso.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    env = {k: v for k, v in os.environ.items() if k != "RAYSWEEP_NO_NETNS"}
    proc = subprocess.Popen([sys.executable, "-m", "raysweep", "run", str(path), "--out",
                             str(tmp_path / "out"), "--no-report"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen: dict[int, list] = {}
        deadline = time.monotonic() + 90
        mine = theirs = os.readlink("/proc/self/ns/net")
        while proc.poll() is None and time.monotonic() < deadline:
            kids = _descendants(proc.pid)  # Ray's processes: started after the isolation
            for pid in kids:
                seen[pid] = _listening(pid) or seen.get(pid, [])
            if any("raylet" in _cmdline(k) for k in kids) and sum(map(len, seen.values())) >= 4:
                theirs = os.readlink(f"/proc/{proc.pid}/ns/net")
                break
            time.sleep(0.5)
        assert theirs != mine, "the run stayed in this network namespace"
        socks = [s for v in seen.values() for s in v]
        assert socks, "no listening socket of the run was seen"
        assert {a for a, _ in socks} <= LOOPBACK_HEX, socks
        host = {port for _, port in _listening(os.getpid())}  # this test's namespace
        assert not host & {p for _, p in socks}, "a Ray port is open in the host namespace"
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "could not isolate" not in err
