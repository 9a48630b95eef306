"""Whether a spawned server outlives its parent: shared by the transformers-serve and llama.cpp tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill(0); it is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def server_pids(marker: str) -> list[int]:
    """Live processes listening on 127.0.0.1 whose command line contains `marker`, started by this test worker.

    Every process on the machine is looked at (a server that escaped its parent is reparented, so a walk of our
    children would miss it); one started under another pytest-xdist worker is not ours: a spawned server inherits
    its parent's environment, PYTEST_XDIST_WORKER included."""
    out = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True).stdout
    pids = []
    for line in out.splitlines():
        pid, stat, args = line.strip().split(None, 2)
        if marker in f" {args} " and "--host 127.0.0.1" in args and not stat.startswith("Z") and _ours(int(pid)):
            pids.append(int(pid))
    return pids


def _ours(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).environ().get("PYTEST_XDIST_WORKER") == os.environ.get("PYTEST_XDIST_WORKER")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def server_dies_with_parent(code: str, sig: signal.Signals, env: dict[str, str] | None = None) -> bool:
    """Run `code` (which starts a server and prints its pid), signal the parent, and say whether the server is gone
    within 15 s after the parent exits."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    server_pid = int(proc.stdout.readline())
    assert alive(server_pid)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    deadline = time.time() + 15
    while alive(server_pid) and time.time() < deadline:
        time.sleep(0.2)
    return not alive(server_pid)


def listening_addresses(port: int) -> list[str]:
    """The local addresses of the sockets listening on `port` (from /proc/net/tcp and tcp6; no `ss` needed)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                lines = fh.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            address, state = fields[1], fields[3]
            host, port_hex = address.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            if len(host) == 8:
                found.append(".".join(str(b) for b in reversed(bytes.fromhex(host))))
            else:
                found.append("ipv6:" + host)
    return found
