"""
The CPU instructions a proxy spends per short tunnel, counted by valgrind.

Timings on a small shared machine move by 10-30 % between runs; an
instruction count does not: the same code, inputs and environment give the
same count, whatever else the machine is doing.  So this is the figure to
compare across changes (a regression of a few percent shows), and between
servers of the same kind (for a C server it leaves out the kernel's work
just as for socksd).  It counts user-space instructions only: system calls
cost time this does not show, which the tps scenario of C{run.py} does.

Each server runs under C{valgrind --tool=callgrind} with counting off; the
script opens a few tunnels to warm it up, turns counting on
(C{callgrind_control -i on}), opens C{--tunnels} tunnels one after another
(SOCKS5 method 00, or SOCKS4 for twistd-socks; CONNECT to a server that
echoes 64 bytes and closes; the 64-byte echo; the close), turns counting
off and divides.  Each tunnel is set up, used and closed before the next,
so unlike the tps scenario there is no batching of events.

    venv/bin/python benchmarks/instructions.py
    venv/bin/python benchmarks/instructions.py --servers socksd --tunnels 500
    venv/bin/python benchmarks/instructions.py --socksd-args '--no-splice'

It needs valgrind (C{apt-get install valgrind}); everything runs on
127.0.0.1, each server in its own process group, stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _procs  # noqa: E402
import _servers  # noqa: E402
from _load import (  # noqa: E402
    HandshakeFailed,
    Via,
    freePort,
    listeningSocket,
    openTunnel,
    recvExactly,
)

PAYLOAD = b"x" * 64


def _echoOnceServer(listener: socket.socket) -> None:
    """Echo 64 bytes on each connection, then close it (in a thread)."""
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        with connection:
            try:
                connection.sendall(recvExactly(connection, len(PAYLOAD)))
            except OSError:
                pass


def _tunnel(via: Via, target: tuple[str, int]) -> None:
    with openTunnel(via, target, 30.0) as sock:
        sock.sendall(PAYLOAD)
        if recvExactly(sock, len(PAYLOAD)) != PAYLOAD:
            raise RuntimeError("the echo differs")
        if sock.recv(1) != b"":
            raise RuntimeError("the echo server's close did not come through")


def _control(*arguments: str) -> None:
    subprocess.run(
        ["callgrind_control", *arguments],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )


def _totals(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def measure(
    spec: _servers.ServerSpec,
    directory: Path,
    target: tuple[str, int],
    tunnels: int,
    extraArgs: tuple[str, ...],
) -> float:
    """
    Run C{spec} under callgrind and count its instructions per tunnel.
    """
    program = spec.find()
    if program is None:
        raise RuntimeError(f"not installed ({spec.install})")
    port = freePort()
    launch = _servers.Launch(program, port, False, directory, extraArgs)
    command = spec.command(launch)
    with open(command[0], "rb") as script:
        first = script.readline(200)
    if first.startswith(b"#!"):
        # A script (twistd, pproxy): valgrind runs its interpreter.
        command = [*first[2:].decode().split(), *command]
    output = directory / "callgrind.%p.out"
    process = _procs.spawn(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={output}",
            *command,
        ],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=open(directory / "output.log", "wb"),
        stderr=subprocess.STDOUT,
        env=dict(os.environ, **spec.environment()),
    )
    try:
        via = Via(spec.protocol, "127.0.0.1", port)
        deadline = time.monotonic() + 180
        while True:
            try:
                _tunnel(via, target)
                break
            except (OSError, RuntimeError, HandshakeFailed):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "did not answer under valgrind; see "
                        f"{directory / 'output.log'}"
                    ) from None
                time.sleep(0.5)
        for _ in range(20):
            _tunnel(via, target)
        pid = str(process.pid)
        _control("-i", "on", pid)
        for _ in range(tunnels):
            _tunnel(via, target)
        _control("-i", "off", pid)
        _control("-d", pid)
        dumps = sorted(directory.glob(f"callgrind.{pid}.out.*"))
        if not dumps:
            raise RuntimeError("callgrind wrote no dump")
        return _totals(dumps[-1]) / tunnels
    finally:
        _procs.stop(process)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--servers",
        default="socksd,pproxy,twistd-socks,microsocks",
        help="comma-separated, from: socksd, pproxy, twistd-socks, microsocks",
    )
    parser.add_argument("--tunnels", type=int, default=300)
    parser.add_argument("--socksd-args", default="")
    parser.add_argument("--twistd", default=None)
    options = parser.parse_args(_procs.glueOption(argv, "--socksd-args"))
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    if not 0 < options.tunnels <= 100_000:
        parser.error("--tunnels must be between 1 and 100000")
    if options.twistd:
        _servers.setTwistd(options.twistd)
    names = [n.strip() for n in options.servers.split(",") if n.strip()]
    unknown = set(names) - set(_servers.SERVER_NAMES)
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    if "dante" in names:
        parser.error("dante serves from forked processes, which callgrind would not count")
    listener = listeningSocket(256)
    threading.Thread(target=_echoOnceServer, args=(listener,), daemon=True).start()
    target = listener.getsockname()[:2]
    extra = tuple(options.socksd_args.split())
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="socksd-instructions-") as temporary:
        for spec in _servers.SERVERS:
            if spec.name not in names:
                continue
            directory = Path(temporary) / spec.name
            directory.mkdir()
            try:
                results[spec.name] = measure(
                    spec,
                    directory,
                    target,
                    options.tunnels,
                    extra if spec.name == "socksd" else (),
                )
                print(f"{spec.name}: {results[spec.name]:,.0f}", file=sys.stderr)
            except RuntimeError as error:
                print(f"{spec.name}: {error}", file=sys.stderr)
    listener.close()
    print(f"instructions per tunnel ({options.tunnels} sequential tunnels, callgrind)")
    base = results.get("socksd")
    for name, value in results.items():
        ratio = f"  {value / base:.2f}x socksd" if base and name != "socksd" else ""
        print(f"{name:<14} {value:>12,.0f}{ratio}")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
