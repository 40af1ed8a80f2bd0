"""
All cores: C{twistd socksd --workers N} runs N worker processes that accept
on the same listening sockets.

The parent (the C{twistd} process) listens on every C{--listen} description
itself, never accepts (its ports stop reading at once), and starts the
workers with L{twisted.internet.interfaces.IReactorProcess.spawnProcess},
passing the listening sockets as inherited file descriptors 3, 4, ...  Each
worker is C{python -m socksd.service.worker --inherit-fds 3,4}
(L{socksd.service.worker}), given the parent's options as a line on its
standard input (never on its command line, where C{ps} would show the
passwords they may hold): it builds the same service from the same
options, adopts the sockets with C{reactor.adoptStreamPort}
(L{AdoptedPortsService}), and runs its own reactor, so the kernel spreads
the connections over the workers.

  - Logs: a worker writes each log event as one line of JSON to its
    standard output (L{socksd.service.jsonlog.EVENT_LINE}); the parent logs
    it again as an event with the same namespace, level and fields, plus
    C{worker} and C{pid}, whose text is C{worker N (pid P): [namespace]
    TEXT}, so every line names its worker and a JSON log
    (L{socksd.service.jsonlog}) keeps the fields.  Other output lines (a
    crash's traceback) are logged as C{worker N (pid P): LINE}.
  - Access records (C{--access-log}): a worker writes each as one line of
    its output (L{socksd.service.accesslog.ACCESS_LINE}); the parent, the
    only writer of the file, writes each complete line to it (a line cut
    short by a worker's death is dropped).
  - Shutdown: stopping the parent (SIGTERM, SIGINT) closes the parent's
    copy of the listening sockets and sends SIGTERM to every worker, which
    drains (L{socksd.service.drain}) and exits; the parent waits for them
    (SIGKILL after the drain timeout and L{STOP_GRACE} more seconds).  A
    second signal to the parent reaches the workers as SIGUSR2: they close
    their connections at once.  A worker whose parent dies sees its
    standard input end, and drains too.
  - A worker that dies is logged, and replaced after L{RESPAWN_DELAY}
    seconds.
  - SIGHUP: the parent passes it on to every worker (each reloads its
    rules).  A worker starts with SIGHUP blocked, and unblocks it once its
    service runs, so that one passed on while it starts is held until then
    (it would otherwise end the worker).
  - Metrics (C{--metrics}): each worker counts its own connections and
    reports its metrics to the parent every L{METRICS_INTERVAL} seconds,
    as one line of its output (L{MetricsReporter}); the parent alone
    listens on the metrics endpoint and serves every worker's latest
    report, each series labelled C{worker="N"} (L{WorkersMetrics}).

With C{--tcp-fastopen}, the parent sets C{TCP_FASTOPEN} on each socket it
listens with (L{socksd.service.listen.setFastOpen}) before the workers
inherit it: the option belongs to the socket, so every worker accepts with
it.

Only descriptions whose transports are plain sockets can be shared this way
(C{tcp}, C{tcp6}, C{unix}, and C{systemd}: a socket systemd passes, which
the parent adopts and hands on like the others); TLS and PROXY-protocol
listeners wrap the protocol in the parent's process, so L{checkListens}
refuses them.  Workers do not inherit systemd's variables
(C{NOTIFY_SOCKET}, C{LISTEN_FDS} ...): only the parent talks to systemd.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from twisted.application import service
from twisted.internet import endpoints, error
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksd.service.accesslog import ACCESS_LINE
from socksd.service.jsonlog import EVENT_LINE, eventFromWorker
from socksd.service.systemd import withoutSystemd
from socksd.service.listen import setFastOpen

__all__ = [
    "WorkersService",
    "AdoptedPortsService",
    "checkListens",
    "workerArguments",
    "serviceFor",
    "STOP_GRACE",
    "RESPAWN_DELAY",
]

log = Logger()

#: Seconds the parent waits for its workers to stop before killing them.
STOP_GRACE = 10.0
#: Seconds before a worker that died is replaced.
RESPAWN_DELAY = 1.0

#: Seconds between a worker's metrics reports to its parent.
METRICS_INTERVAL = 1.0

#: How a worker's output line that carries its metrics begins (a log line
#: begins with "["); the rest is the metrics in Prometheus' text format, as
#: a JSON string.
METRICS_LINE = b"%socksd-metrics "
#: The kinds of listen descriptions workers can share.
SHAREABLE = frozenset({"tcp", "tcp6", "unix", "systemd"})


def checkListens(descriptions: Sequence[str]) -> None:
    """
    @raise ValueError: a description is not a plain C{tcp}, C{tcp6},
        C{unix} or C{systemd} one, which workers cannot share.
    """
    for description in descriptions:
        args, kwargs = endpoints._parse(description)
        kind = args[0] if args else "tcp"
        if kind not in SHAREABLE:
            raise ValueError(
                f"--workers cannot share {description!r}: only tcp, tcp6, "
                "unix and systemd listeners can be shared by worker processes"
            )


def inheritedDescription(description: str, port: Any) -> str:
    """
    What a worker is told it listens on for the parent's C{description}
    and its listening C{port}: the description itself, but for a
    C{systemd:} one (which names a socket only the parent inherited, and
    which a worker could not look at) a description of the address the
    socket is bound to, so that the worker's open-proxy guard judges it as
    the parent's did.
    """
    args, _ = endpoints._parse(description)
    if not args or args[0] != "systemd":
        return description
    host = port.getHost()
    if getattr(host, "type", None) == "TCP":
        address = host.host.replace(":", "\\:")
        kind = "tcp6" if ":" in host.host else "tcp"
        return f"{kind}:{host.port}:interface={address}"
    return "unix:inherited-from-systemd"


def withListens(arguments: Sequence[str], descriptions: Sequence[str]) -> list[str]:
    """
    C{arguments} (socksd options) with their C{--listen} options replaced
    by C{descriptions} (which, given on the command line, also replace a
    configuration file's).
    """
    result: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
            continue
        if argument == "--listen":
            skip = True
            continue
        if argument.startswith("--listen="):
            continue
        result.append(argument)
    for description in descriptions:
        result += ["--listen", description]
    return result


def argumentsLine(arguments: Sequence[str]) -> bytes:
    """The line that gives a worker its socksd options (as JSON)."""
    return json.dumps(list(arguments)).encode("utf-8") + b"\n"


def workerArguments(argv: Sequence[str]) -> list[str]:
    """
    The socksd options of a worker: C{argv} (the parent's socksd options)
    without C{--workers} (and its value) and C{--inherit-fds}.
    """
    result: list[str] = []
    skip = False
    for argument in argv:
        if skip:
            skip = False
            continue
        if argument in ("--workers", "--inherit-fds"):
            skip = True
            continue
        if argument.startswith(("--workers=", "--inherit-fds=")):
            continue
        result.append(argument)
    return result


class _Refuse(Factory):
    """The parent's factory: it never gets a connection (its ports do not
    read), and would refuse one."""

    noisy = False

    def buildProtocol(self, addr: Any) -> None:
        return None


class _WorkerProtocol(ProcessProtocol):
    """One worker: its output becomes log lines, its end is reported."""

    def __init__(self, parent: WorkersService, index: int) -> None:
        self.parent = parent
        self.index = index
        self.pid: int | None = None
        self.buffer = b""
        self.errors = b""
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.pid = self.transport.pid
        log.info("worker {worker} started (pid {pid})", worker=self.index, pid=self.pid)

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.startswith(EVENT_LINE):
                self._event(line)
            elif line.startswith(ACCESS_LINE):
                self.parent.accessLine(line[len(ACCESS_LINE) :] + b"\n")
            elif line.startswith(METRICS_LINE):
                self._metrics(line[len(METRICS_LINE) :])
            elif line:
                self._text(line)

    def errReceived(self, data: bytes) -> None:
        """The worker's standard error: text (a crash's traceback)."""
        self.errors += data
        *lines, self.errors = self.errors.split(b"\n")
        for line in lines:
            if line:
                self._text(line)

    def _text(self, line: bytes) -> None:
        self.parent.workerLog.info(
            "worker {worker} (pid {pid}): {line}",
            worker=self.index,
            pid=self.pid,
            line=line.decode("utf-8", "backslashreplace"),
        )

    def _event(self, line: bytes) -> None:
        """Log a worker's event again, with its fields (see L{jsonlog})."""
        try:
            fields = json.loads(line[len(EVENT_LINE) :])
            if not isinstance(fields, dict):
                raise ValueError("not an object")
        except ValueError:
            self._text(line)
            return
        event = eventFromWorker(fields, self.index, self.pid)
        self.parent.workerEvent(event)

    def _metrics(self, report: bytes) -> None:
        """Keep the worker's latest metrics report, for L{WorkersMetrics}."""
        try:
            text = json.loads(report)
            if not isinstance(text, str):
                raise ValueError("not a string")
        except ValueError as e:
            log.warn(
                "worker {worker} (pid {pid}) sent unreadable metrics: {error}",
                worker=self.index,
                pid=self.pid,
                error=e,
            )
            return
        self.parent.metricsReports[self.index] = text

    def processEnded(self, reason: Failure) -> None:
        if self.buffer.startswith(ACCESS_LINE):
            # Cut short by the worker's end: never a torn record.
            log.warn(
                "worker {worker} (pid {pid}) ended in the middle of an access"
                " record; it is lost",
                worker=self.index,
                pid=self.pid,
            )
        elif self.buffer:
            self.outReceived(b"\n")
        self.buffer = b""
        if self.errors:
            self.errReceived(b"\n")
        self.parent._ended(self, reason)
        self.ended.callback(None)


class WorkersService(service.Service):
    """
    The parent's side of C{--workers N}: see the module docstring.

    @ivar workers: the running workers' protocols, by index.
    """

    def __init__(
        self,
        reactor: Any,
        descriptions: Sequence[str],
        count: int,
        arguments: Sequence[str],
        executable: str = sys.executable,
        fastOpen: int = 0,
        drainTimeout: float = 0.0,
        publisher: Any = None,
    ) -> None:
        """
        @param descriptions: the C{--listen} descriptions.
        @param count: how many workers.
        @param arguments: the workers' socksd options (see
            L{workerArguments}).
        @param drainTimeout: how long the workers may drain when they are
            stopped (C{--drain-timeout}); they are killed L{STOP_GRACE}
            seconds after it.
        @param publisher: where the workers' log events go (the global log
            publisher by default).
        @param fastOpen: the C{TCP_FASTOPEN} queue length for the
            listening sockets (C{--tcp-fastopen}), or 0 for none.
        """
        self._reactor = reactor
        self._descriptions = list(descriptions)
        self._count = count
        self._arguments = list(arguments)
        self._executable = executable
        self._fastOpen = fastOpen
        self._ports: list[Any] = []
        self.workers: dict[int, _WorkerProtocol] = {}
        #: Each running worker's latest metrics report (Prometheus' text
        #: format), by index.
        self.metricsReports: dict[int, str] = {}
        self._stopping = False
        self._respawns: dict[int, Any] = {}
        self.drainTimeout = drainTimeout
        if publisher is None:
            from twisted.logger import globalLogPublisher

            publisher = globalLogPublisher
        self._publisher = publisher
        #: The logger of the workers' text lines (to C{publisher}).
        self.workerLog = Logger(namespace=__name__, observer=publisher)
        #: The parent's L{socksd.service.accesslog.AccessLog}, which writes
        #: the workers' access records, or L{None}.
        self.accessLog: Any = None
        #: The connections the workers' drains reported: ended, cut.
        self._drained = [0, 0]

    def workerEvent(self, event: dict[str, Any]) -> None:
        """
        Log a worker's event (L{eventFromWorker}); count what its drain
        reports.
        """
        if event.get("log_namespace") == "socksd.service.drain":
            ended, cut = event.get("ended"), event.get("cut")
            if isinstance(ended, int) and isinstance(cut, int):
                self._drained[0] += ended
                self._drained[1] += cut
        self._publisher(event)

    def accessLine(self, line: bytes) -> None:
        """A worker's access record (one line): write it to the access log."""
        if self.accessLog is not None:
            self.accessLog.writeLine(line)

    def drainCounts(self) -> tuple[int, int]:
        """The connections the workers' drains reported: ended, cut."""
        return self._drained[0], self._drained[1]

    def running(self) -> bool:
        """Is any worker running?"""
        return bool(self.workers)

    def cut(self) -> None:
        """Tell every worker to close its connections now (SIGUSR2)."""
        self.signalWorkers(signal.SIGUSR2)

    def signalWorkers(self, signal: str | int) -> None:
        """
        Send C{signal} (C{"HUP"}, ..., or a signal number) to every running
        worker: the parent passes SIGHUP on, so every worker reloads its
        rules.
        """
        for worker in list(self.workers.values()):
            transport = getattr(worker, "transport", None)
            if transport is None:
                continue
            try:
                transport.signalProcess(signal)
            except Exception:
                log.failure("passing SIG{signal} to a worker failed", signal=signal)

    def startService(self) -> None:
        super().startService()
        for description in self._descriptions:
            endpoint = endpoints.serverFromString(self._reactor, description)
            deferred = endpoint.listen(_Refuse())
            # tcp, tcp6 and unix endpoints listen at once: a failure (port
            # in use) propagates out of startService and stops twistd.
            ports: list[Any] = []
            deferred.addCallback(ports.append)
            failures: list[Failure] = []
            deferred.addErrback(failures.append)
            if failures:
                if failures[0].check(error.CannotListenError):
                    from socksd.service.listen import (
                        StartupError,
                        explainListenError,
                        reportStartupErrors,
                    )

                    reportStartupErrors()
                    message = explainListenError(description, failures[0].value)
                    log.error("{message}", message=message)
                    raise StartupError(message)
                failures[0].raiseException()
            port = ports[0]
            port.stopReading()
            self._ports.append(port)
            if self._fastOpen:
                setFastOpen(port, self._fastOpen)
            log.info(
                "listening on {description} for {count} workers",
                description=description,
                count=self._count,
            )
        inherited = [
            inheritedDescription(description, port)
            for description, port in zip(self._descriptions, self._ports)
        ]
        if inherited != self._descriptions:
            self._arguments = withListens(self._arguments, inherited)
        for index in range(1, self._count + 1):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._respawns.pop(index, None)
        if self._stopping:
            return
        fds = list(range(3, 3 + len(self._ports)))
        childFDs: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        for fd, port in zip(fds, self._ports):
            childFDs[fd] = port.fileno()
        env = withoutSystemd(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env["SOCKSD_WORKER"] = str(index)
        env["SOCKSD_WORKER_ARGUMENTS"] = "stdin"
        # The socksd options (which may hold passwords: --auth memory:...,
        # upstream URLs with credentials) go over the worker's standard
        # input, never on its command line, where ps would show them.
        args = [
            self._executable,
            "-m",
            "socksd.service.worker",
            "--inherit-fds",
            ",".join(map(str, fds)),
        ]
        protocol = _WorkerProtocol(self, index)
        self.workers[index] = protocol
        # The worker starts with SIGHUP blocked (the signal mask is
        # inherited), so that a SIGHUP passed on while it starts is held
        # until it can reload, rather than ending it (L{signalWorkers}).
        with _hangupBlocked():
            transport = self._reactor.spawnProcess(
                protocol, self._executable, args, env=env, childFDs=childFDs
            )
        transport.writeToChild(0, argumentsLine(self._arguments))

    def _ended(self, worker: _WorkerProtocol, reason: Failure) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
            # Its replacement starts counting from zero.
            self.metricsReports.pop(worker.index, None)
        if self._stopping:
            log.info(
                "worker {worker} (pid {pid}) stopped",
                worker=worker.index,
                pid=worker.pid,
            )
            return
        log.error(
            "worker {worker} (pid {pid}) died: {why}; replacing it in {delay} s",
            worker=worker.index,
            pid=worker.pid,
            why=reason.getErrorMessage(),
            delay=RESPAWN_DELAY,
        )
        self._respawns[worker.index] = self._reactor.callLater(
            RESPAWN_DELAY, self._spawn, worker.index
        )

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self._stopping = True
        for call in self._respawns.values():
            if call.active():
                call.cancel()
        self._respawns.clear()
        waiting = []
        for worker in list(self.workers.values()):
            waiting.append(worker.ended)
            try:
                worker.transport.signalProcess("TERM")
            except error.ProcessExitedAlready:
                pass
        killer = self._reactor.callLater(self.drainTimeout + STOP_GRACE, self._kill)
        stops = [port.stopListening() for port in self._ports]
        self._ports = []

        def done(result: Any) -> Any:
            if killer.active():
                killer.cancel()
            return result

        return DeferredList(waiting + [d for d in stops if d is not None]).addBoth(done)

    def _kill(self) -> None:
        for worker in list(self.workers.values()):
            log.warn(
                "worker {worker} (pid {pid}) did not stop: killing it",
                worker=worker.index,
                pid=worker.pid,
            )
            try:
                worker.transport.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass


class MetricsReporter(service.Service):
    """
    A worker's side of C{--metrics}: every L{METRICS_INTERVAL} seconds, and
    when it stops, write its metrics to C{stream} as one line (see
    L{METRICS_LINE}) for the parent to serve.
    """

    def __init__(
        self,
        metrics: Any,
        reactor: Any,
        stream: Any,
        interval: float = METRICS_INTERVAL,
    ) -> None:
        """
        @param metrics: the worker's L{socksd.service.metrics.Metrics}.
        @param stream: a text stream: the worker's standard output.
        """
        self._metrics = metrics
        self._reactor = reactor
        self._stream = stream
        self._interval = interval
        self._loop: Any = None

    def startService(self) -> None:
        from twisted.internet.task import LoopingCall

        super().startService()
        self._loop = LoopingCall(self.report)
        self._loop.clock = self._reactor
        self._loop.start(self._interval, now=True).addErrback(
            lambda failure: log.failure("reporting metrics failed", failure)
        )

    def stopService(self) -> Any:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.report()
        return super().stopService()

    def report(self) -> None:
        """Write the metrics now."""
        text = self._metrics.text().decode("utf-8")
        self._stream.write(METRICS_LINE.decode("ascii") + json.dumps(text) + "\n")
        self._stream.flush()


class WorkersMetrics:
    """
    The parent's metrics with C{--workers}: every running worker's latest
    report (L{WorkersService.metricsReports}), each series with a C{worker}
    label, as a C{prometheus_client} collector in its own C{registry}
    (what L{socksd.service.metrics.metricsService} serves).
    """

    def __init__(self, workers: WorkersService) -> None:
        from prometheus_client import CollectorRegistry

        self._workers = workers
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> list[Any]:
        """The workers' series, merged by name (for C{prometheus_client})."""
        from prometheus_client.core import Metric
        from prometheus_client.parser import text_string_to_metric_families

        merged: dict[str, Any] = {}
        for index, text in sorted(self._workers.metricsReports.items()):
            try:
                families = list(text_string_to_metric_families(text))
            except Exception:
                log.failure("reading worker {worker}'s metrics failed", worker=index)
                continue
            for family in families:
                out = merged.get(family.name)
                if out is None:
                    out = merged[family.name] = Metric(
                        family.name, family.documentation, family.type
                    )
                for sample in family.samples:
                    out.add_sample(
                        sample.name, dict(sample.labels, worker=str(index)), sample.value
                    )
        return list(merged.values())


class AdoptedPortsService(service.Service):
    """
    A worker's side: accept on inherited listening sockets with
    C{reactor.adoptStreamPort}.
    """

    def __init__(
        self, reactor: Any, fds: Sequence[int], factory: Any, acceptErrors: Any = None
    ) -> None:
        """
        @param acceptErrors: a L{socksd.service.listen.AcceptErrors} the
            ports report the connections they cannot accept to, or L{None}.
        """
        self._reactor = reactor
        self._fds = list(fds)
        self._factory = factory
        self._acceptErrors = acceptErrors
        self._ports: list[Any] = []

    def startService(self) -> None:
        super().startService()
        for fd in self._fds:
            probe = socket.socket(fileno=fd)
            family = probe.family
            probe.detach()
            port = self._reactor.adoptStreamPort(fd, family, self._factory)
            if self._acceptErrors is not None:
                self._acceptErrors.watch(port)
            self._ports.append(port)
            # The socket is shared with the parent and the other workers,
            # and must stay non-blocking or a worker that loses the race
            # for a connection blocks in accept(); PyPy's socket objects
            # made from a descriptor (above, and in adoptStreamPort) set
            # it blocking.
            os.set_blocking(fd, False)
            os.close(fd)

    def stopService(self) -> Any:
        super().stopService()
        ports, self._ports = self._ports, []
        stops = [port.stopListening() for port in ports]
        return gatherResults([d for d in stops if d is not None])


@contextmanager
def _hangupBlocked() -> Iterator[None]:
    """Block SIGHUP in this thread for the block (where the system can)."""
    import signal

    block = getattr(signal, "pthread_sigmask", None)
    if block is None or not hasattr(signal, "SIGHUP"):
        yield
        return
    previous = block(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        yield
    finally:
        block(signal.SIG_SETMASK, previous)


def serviceFor(
    options: Any, factory: Any, reactor: Any, acceptErrors: Any = None
) -> service.IService:
    """
    The listening service of C{twistd socksd} with C{--workers} above 1 (in
    the parent: L{WorkersService}) or with C{--inherit-fds} (in a worker:
    L{AdoptedPortsService} serving C{factory}, its ports reporting to
    C{acceptErrors}).
    """
    if options["inherit-fds"]:
        fds = [int(fd) for fd in options["inherit-fds"].split(",") if fd]
        return AdoptedPortsService(reactor, fds, factory, acceptErrors)
    return WorkersService(
        reactor,
        options["listen"],
        options["workers"],
        workerArguments(options.get("argv", [])),
        fastOpen=options.get("tcp-fastopen") or 0,
        drainTimeout=options.get("drain-timeout") or 0.0,
    )
