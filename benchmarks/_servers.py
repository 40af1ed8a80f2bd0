"""
The proxies the benchmarks compare, described in one table (L{SERVERS}),
and how to start, probe and stop them.

To add a server, add a L{ServerSpec}: how to find its program, the command
line for a port (with or without username/password), the handshake the load
generator must speak to it, and its features. A scenario that needs a
feature (C{"auth"}; later C{"udp"}, C{"socks6"}) runs only on servers that
list it, and the others get a row that says why not.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import _procs
from _load import HandshakeFailed, Via, freePort, openTunnel, recvExactly

REPOSITORY = Path(__file__).resolve().parent.parent
USERNAME = PASSWORD = "bench"


@dataclass(frozen=True, slots=True)
class Launch:
    """
    Everything a command line may depend on.

    @ivar program: the executable that L{ServerSpec.find} returned.
    @ivar auth: require username/password C{bench}/C{bench}.
    @ivar directory: a private temporary directory (config files, logs).
    @ivar extraArgs: user-supplied arguments (C{--socksd-args}).
    """

    program: str
    port: int
    auth: bool
    directory: Path
    extraArgs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """
    One proxy in the comparison.

    @ivar find: returns the program to run, or L{None} if not installed.
    @ivar command: the command line for a L{Launch}.
    @ivar protocol: the handshake the load generator speaks to it.
    @ivar features: what it supports beyond an unauthenticated CONNECT in
        C{protocol}: C{"auth"} (SOCKS5 username/password).
    @ivar install: how to install it, for the "not installed" rows.
    @ivar version: returns a version string for the JSON record.
    @ivar environment: extra environment variables for its process.
    """

    name: str
    summary: str
    protocol: str
    features: frozenset[str]
    find: Callable[[], str | None]
    command: Callable[[Launch], list[str]]
    install: str
    version: Callable[[str], str] = lambda program: ""
    environment: Callable[[], dict[str, str]] = dict

    def __post_init__(self) -> None:
        if self.protocol not in ("socks5", "socks4"):
            raise ValueError(f"{self.name}: unknown protocol {self.protocol!r}")
        unknown = self.features - {"auth", "udp", "socks6"}
        if unknown:
            raise ValueError(f"{self.name}: unknown features {sorted(unknown)}")


def _sibling(name: str) -> str | None:
    """
    Find C{name} next to this Python (its virtualenv), else on C{PATH}.
    """
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def _outputOf(command: list[str], environment: dict[str, str] | None = None) -> str:
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=30,
            env=None if environment is None else dict(os.environ, **environment),
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (result.stdout + result.stderr).strip()


def _debianVersion(package: str) -> str:
    if shutil.which("dpkg-query") is None:
        return ""
    return _outputOf(["dpkg-query", "-W", "-f=${Version}", package])


def _socksdEnvironment() -> dict[str, str]:
    # Run the checkout's socksd even when it is not pip-installed; Twisted
    # finds twisted/plugins/socksd_plugin.py through the same path.
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(REPOSITORY) + (os.pathsep + path if path else "")}


_twistdOverride: list[str] = []


def setTwistd(path: str) -> None:
    """
    Use C{path} as C{twistd} for socksd and twistd-socks.
    """
    _twistdOverride[:] = [path]


def _executable(path: str) -> str | None:
    """C{path} if it can be run, else the program of that name on C{PATH}."""
    return path if os.access(path, os.X_OK) else shutil.which(path)


def _findTwistd() -> str | None:
    if _twistdOverride:
        return _executable(_twistdOverride[0])
    return _sibling("twistd")


_socksdFound: dict[str, str | None] = {}


def _findSocksd() -> str | None:
    twistd = _findTwistd()
    if twistd is None:
        return None
    if twistd not in _socksdFound:
        try:
            result = subprocess.run(
                [twistd, "socksd", "--help"],
                capture_output=True,
                text=True,
                timeout=60,
                env=dict(os.environ, **_socksdEnvironment()),
            )
            usable = result.returncode == 0 and "--listen" in result.stdout
        except (OSError, subprocess.TimeoutExpired):
            usable = False
        _socksdFound[twistd] = twistd if usable else None
    return _socksdFound[twistd]


_pypyOverride: list[str] = []
# twistd, run by an interpreter given as a path: "python -m twisted" is twist.
_TWISTD = "from twisted.scripts.twistd import run; run()"


def setPypy(path: str) -> None:
    """
    Also run socksd on the interpreter C{path} (a PyPy 3.11 with socksd's
    dependencies installed), as the server C{socksd-pypy}.
    """
    _pypyOverride[:] = [path]


def _findSocksdPypy() -> str | None:
    if not _pypyOverride:
        return None
    pypy = _executable(_pypyOverride[0])
    if pypy is None:
        return None
    help = _outputOf([pypy, "-c", _TWISTD, "socksd", "--help"], _socksdEnvironment())
    return pypy if "--listen" in help else None


def _interpreterVersion(interpreter: str) -> str:
    """socksd's version and the interpreter's, e.g. C{0.1.0 on PyPy 3.11.17}."""
    return _outputOf(
        [
            interpreter,
            "-c",
            "import platform, socksd; print(socksd.__version__, 'on',"
            " platform.python_implementation(), platform.python_version())",
        ],
        _socksdEnvironment(),
    )


def _socksdPypyCommand(launch: Launch) -> list[str]:
    return [launch.program, "-c", _TWISTD, *_socksdCommand(launch)[1:]]


def _socksdVersion(program: str) -> str:
    python = Path(program).parent / "python"
    return _interpreterVersion(str(python) if python.exists() else sys.executable)


def _socksdCommand(launch: Launch) -> list[str]:
    command = [
        launch.program,
        "-n",
        "--pidfile=",
        "socksd",
        "--listen",
        f"tcp:{launch.port}:interface=127.0.0.1",
    ]
    if launch.auth:
        command += ["--auth", f"memory:{USERNAME}:{PASSWORD}"]
    return command + list(launch.extraArgs)


#: The socksd options of the server socksd-shared, besides --shared-state:
#: a per-client cap no benchmark reaches, so that each tunnel is admitted
#: by the fleet (one Redis round trip) and released (one more).
SHARED_ARGS = ("--max-connections-per-client", "1000000")


def _findSocksdShared() -> str | None:
    if shutil.which("redis-server") is None:
        return None
    try:
        import txredisapi  # noqa: F401
    except ImportError:
        return None
    return _findSocksd()


def _socksdSharedCommand(launch: Launch) -> list[str]:
    """
    socksd with --shared-state on a redis-server of its own (started here,
    on a free port, stopped with every process of the harness); the port
    is written to C{redis.port} in the server's directory, where the tps
    scenario reads Redis' command counts.
    """
    port = freePort()
    _procs.spawn(
        [
            shutil.which("redis-server"),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(launch.directory),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            import socket

            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    (launch.directory / "redis.port").write_text(str(port))
    return _socksdCommand(launch) + [
        "--shared-state",
        f"redis://127.0.0.1:{port}/0",
        *SHARED_ARGS,
    ]


def redisCalls(directory: Path) -> int | None:
    """
    The round trips socksd-shared made to its Redis so far: the scripts
    it ran (EVAL, EVALSHA; the commands a script runs inside Redis are not
    round trips, and socksd sends plain commands only when Redis comes
    back, when it stops and for C{/quotas}), or L{None} for another server.
    """
    portFile = directory / "redis.port"
    if not portFile.exists() or shutil.which("redis-cli") is None:
        return None
    text = _outputOf(
        ["redis-cli", "-p", portFile.read_text().strip(), "info", "commandstats"]
    )
    calls = 0
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("cmdstat_eval", "cmdstat_evalsha"):
            calls += int(rest.split(",")[0].split("=")[1])
    return calls


def _twistdSocksCommand(launch: Launch) -> list[str]:
    return [
        launch.program,
        "-n",
        "--pidfile=",
        "socks",
        "--interface",
        "127.0.0.1",
        "--port",
        str(launch.port),
    ]


def _firstLine(command: list[str]) -> str:
    lines = _outputOf(command).splitlines()
    return lines[0] if lines else ""


def _microsocksCommand(launch: Launch) -> list[str]:
    command = [launch.program, "-i", "127.0.0.1", "-p", str(launch.port)]
    if launch.auth:
        command += ["-u", USERNAME, "-P", PASSWORD]
    return command


def _findDante() -> str | None:
    # Debian installs sockd as /usr/sbin/danted, which is not on every PATH.
    for name in ("sockd", "danted"):
        found = shutil.which(name) or shutil.which(
            name, path="/usr/sbin:/usr/local/sbin"
        )
        if found:
            return found
    return None


def _danteCommand(launch: Launch) -> list[str]:
    privileges = ""
    if os.geteuid() == 0:
        privileges = "user.privileged: root\nuser.unprivileged: root\n"
    configuration = launch.directory / "sockd.conf"
    configuration.write_text(
        "logoutput: stderr\n"
        f"internal: 127.0.0.1 port = {launch.port}\n"
        "external: 127.0.0.1\n"
        "clientmethod: none\n"
        "socksmethod: none\n"
        f"{privileges}"
        "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }\n"
        "socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }\n"
    )
    return [
        launch.program,
        "-f",
        str(configuration),
        "-p",
        str(launch.directory / "sockd.pid"),
        "-N",
        "1",
    ]


def _pproxyCommand(launch: Launch) -> list[str]:
    uri = f"socks5://127.0.0.1:{launch.port}"
    if launch.auth:
        uri += f"#{USERNAME}:{PASSWORD}"
    return [launch.program, "-l", uri]


SERVERS: tuple[ServerSpec, ...] = (
    ServerSpec(
        name="socksd",
        summary="this project (twistd -n socksd)",
        protocol="socks5",
        features=frozenset({"auth"}),
        find=_findSocksd,
        command=_socksdCommand,
        install="pip install -e . in the checkout, then run the harness with that virtualenv's python",
        version=_socksdVersion,
        environment=_socksdEnvironment,
    ),
    ServerSpec(
        name="socksd-shared",
        summary="this project with --shared-state (a redis-server of its own) "
        "and a per-client cap no load reaches",
        protocol="socks5",
        features=frozenset({"auth"}),
        find=_findSocksdShared,
        command=_socksdSharedCommand,
        install="apt-get install redis-server; pip install 'socksd[redis]'",
        version=_socksdVersion,
        environment=_socksdEnvironment,
    ),
    ServerSpec(
        name="socksd-pypy",
        summary="this project on PyPy (twistd -n socksd run by --pypy)",
        protocol="socks5",
        features=frozenset({"auth"}),
        find=_findSocksdPypy,
        command=_socksdPypyCommand,
        install="a PyPy 3.11 with socksd installed, passed as --pypy PYPY",
        version=_interpreterVersion,
        environment=_socksdEnvironment,
    ),
    ServerSpec(
        name="microsocks",
        summary="microsocks, C, one thread per client",
        protocol="socks5",
        features=frozenset({"auth"}),
        find=lambda: shutil.which("microsocks"),
        command=_microsocksCommand,
        install="apt-get install microsocks",
        version=lambda program: _debianVersion("microsocks"),
    ),
    ServerSpec(
        name="dante",
        summary="Dante sockd, C, preforked processes",
        protocol="socks5",
        # Dante's username method checks system accounts; the harness does
        # not create one, so dante sits out the auth scenario.
        features=frozenset(),
        find=_findDante,
        command=_danteCommand,
        install="apt-get install dante-server",
        version=lambda program: _firstLine([program, "-v"]),
    ),
    ServerSpec(
        name="pproxy",
        summary="pproxy, Python asyncio",
        protocol="socks5",
        features=frozenset({"auth"}),
        find=lambda: _sibling("pproxy"),
        command=_pproxyCommand,
        install="pip install pproxy",
        version=lambda program: _outputOf([program, "--version"]),
    ),
    ServerSpec(
        name="twistd-socks",
        summary="Twisted's own SOCKSv4 server (twistd -n socks)",
        protocol="socks4",
        features=frozenset(),
        find=_findTwistd,
        command=_twistdSocksCommand,
        install="pip install twisted",
        version=lambda program: _firstLine([program, "--version"]),
    ),
)

SERVER_NAMES = tuple(spec.name for spec in SERVERS)


def serverNamed(name: str) -> ServerSpec:
    """
    The L{ServerSpec} called C{name}.

    @raise KeyError: there is none.
    """
    for spec in SERVERS:
        if spec.name == name:
            return spec
    raise KeyError(name)


class ServerFailed(Exception):
    """
    A server did not start, or stopped answering.
    """


@dataclass(slots=True)
class RunningServer:
    """
    A started proxy: its process, port and the L{Via} that reaches it.
    """

    spec: ServerSpec
    process: subprocess.Popen
    port: int
    via: Via
    command: list[str]
    logPath: Path
    extra: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def logTail(self, lines: int = 5) -> str:
        """
        The last lines of the server's output, for error messages.
        """
        try:
            text = self.logPath.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        _procs.stop(self.process)


def probe(via: Via, echo: tuple[str, int], timeout: float = 5.0) -> None:
    """
    One tunnel to the echo server through C{via}, echoing four bytes.

    @raise HandshakeFailed: or L{OSError}, if that did not work.
    """
    with openTunnel(via, echo, timeout) as sock:
        sock.sendall(b"ping")
        if recvExactly(sock, 4) != b"ping":
            raise HandshakeFailed("the probe's echo differs")


#: The CPUs proxies run on (C{--pin-proxy}), or L{None}: wherever the
#: system puts them.
proxyCpus: set[int] | None = None


def _pinned() -> None:
    """In the child, before C{exec}: stay on L{proxyCpus}."""
    if proxyCpus:
        os.sched_setaffinity(0, proxyCpus)


def start(
    spec: ServerSpec,
    directory: Path,
    echo: tuple[str, int],
    auth: bool = False,
    extraArgs: tuple[str, ...] = (),
    timeout: float = 30.0,
) -> RunningServer:
    """
    Start C{spec} on a free port and wait until a tunnel through it works.

    @param directory: a fresh directory for its files and its log.
    @raise ServerFailed: it is not installed, exited, or never answered.
    """
    program = spec.find()
    if program is None:
        raise ServerFailed(f"not installed ({spec.install})")
    try:
        port = freePort()
    except OSError as error:
        raise ServerFailed(f"no port: {error}") from None
    directory.mkdir(parents=True, exist_ok=True)
    command = spec.command(Launch(program, port, auth, directory, tuple(extraArgs)))
    logPath = directory / "output.log"
    with open(logPath, "wb") as log:
        try:
            process = _procs.spawn(
                command,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, **spec.environment()),
                preexec_fn=_pinned if proxyCpus else None,
            )
        except OSError as error:
            raise ServerFailed(f"cannot run {shlex.join(command)}: {error}") from None
    via = Via(
        spec.protocol,
        "127.0.0.1",
        port,
        USERNAME if auth else None,
        PASSWORD if auth else None,
    )
    server = RunningServer(spec, process, port, via, command, logPath)
    deadline = time.monotonic() + timeout
    lastError = "no answer"
    while time.monotonic() < deadline:
        if not server.alive():
            raise ServerFailed(
                f"exited with {process.returncode}: {server.logTail()} "
                f"(command: {shlex.join(command)})"
            )
        try:
            probe(via, echo)
            return server
        except (OSError, HandshakeFailed) as error:
            lastError = str(error) or type(error).__name__
        time.sleep(0.1)
    tail = server.logTail(3)  # before stopping it adds its farewells
    server.stop()
    raise ServerFailed(f"no working tunnel after {timeout:.0f} s: {lastError}; {tail}")
