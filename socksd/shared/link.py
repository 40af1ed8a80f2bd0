"""
The Redis connection a fleet shares (L{RedisLink}), its address
(L{parseRedisUrl}) and its failure policy.

  - One connection per process, made and remade by txredisapi (Twisted's
    C{ClientService} underneath): after Redis goes away, socksd tries again
    after half a second, backing off to at most L{RECONNECT_MAX} seconds.
  - Every command has a deadline (L{DEADLINE}, one second): a command
    Redis has not answered by then fails, and txredisapi drops the
    connection (so a Redis that hangs is as down as one that is gone).
  - The link is I{up} while it has a connection.  While it is down, every
    call fails at once (nothing waits for Redis), and the callers apply the
    failure policy (C{--shared-state-failure}): C{open} falls back to each
    process's own caps, buckets and sessions; C{closed} refuses new tunnels
    with a general-failure reply.
  - Each change of state is logged and told to the L{RedisLink.observe}rs
    (the metrics, and the fleet, which registers itself again).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = [
    "RedisAddress",
    "RedisLink",
    "SharedStateDown",
    "parseRedisUrl",
    "DEADLINE",
    "RECONNECT_MAX",
    "FAILURE_MODES",
]

log = Logger()

#: Seconds any one Redis command may take.
DEADLINE = 1.0
#: The longest pause, in seconds, between two attempts to reconnect.
RECONNECT_MAX = 2.0
#: The values of C{--shared-state-failure}.
FAILURE_MODES = ("open", "closed")


class SharedStateDown(Exception):
    """Redis cannot be asked now (no connection, or no answer in time)."""


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """
    Where the fleet's Redis is.

    @ivar scheme: C{redis}, C{rediss} (TLS) or C{unix}.
    @ivar host: the host (TCP), or L{None}.
    @ivar port: the port (TCP), or L{None}.
    @ivar path: the socket's path (C{unix}), or L{None}.
    @ivar db: the database number.
    @ivar username: the ACL user, or L{None}.
    @ivar password: the password, or L{None}.
    @ivar ca: (C{rediss}) a PEM file of the certificate authority to trust
        instead of the system's, or L{None}.
    """

    scheme: str
    host: str | None = None
    port: int | None = None
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    ca: str | None = None

    def __str__(self) -> str:
        """The address without its password, for logs."""
        user = f"{self.username}@" if self.username else ""
        if self.scheme == "unix":
            return f"unix://{user}{self.path}?db={self.db}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{self.scheme}://{user}{host}:{self.port}/{self.db}"


def parseRedisUrl(url: str) -> RedisAddress:
    """
    Parse C{redis://[USER:PASSWORD@]HOST:PORT/DB}, C{rediss://...} (TLS,
    with C{?ca=PATH} for a private authority) or
    C{unix://[USER:PASSWORD@]/PATH?db=DB}.  The port defaults to 6379 and
    the database to 0.

    @raise ValueError: naming what is wrong.
    """
    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise ValueError(f"{url!r} is not a URL: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"{url!r}: expected redis://HOST:PORT/DB, rediss://HOST:PORT/DB "
            "or unix:///PATH?db=DB"
        )
    query = parse_qs(parts.query)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if username is not None and password is None:
        # redis://secret@host: a password alone, as redis-cli reads it.
        username, password = None, username
    ca = query.get("ca", [None])[0]
    if scheme == "unix":
        if not parts.path:
            raise ValueError(f"{url!r}: a unix:// URL names the socket's path")
        db = query.get("db", ["0"])[0]
        return RedisAddress(
            "unix",
            path=unquote(parts.path),
            db=_database(db, url),
            username=username,
            password=password,
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    path = parts.path.strip("/")
    db = path or query.get("db", ["0"])[0]
    return RedisAddress(
        scheme,
        host=parts.hostname,
        port=port or 6379,
        db=_database(db, url),
        username=username,
        password=password,
        ca=ca,
    )


def _database(text: str, url: str) -> int:
    try:
        db = int(text, 10)
    except ValueError:
        db = -1
    if not 0 <= db < 2**31:
        raise ValueError(f"{url!r}: the database is a number, not {text!r}")
    return db


class RedisLink:
    """
    The process's connection to the fleet's Redis; see the module
    docstring.

    @ivar address: the L{RedisAddress}.
    @ivar up: whether Redis can be asked now.
    @ivar deadline: seconds a command may take.
    @ivar calls: the commands sent so far (scripts count one each).
    """

    def __init__(
        self, reactor: Any, address: RedisAddress, deadline: float = DEADLINE
    ) -> None:
        self.address = address
        self.deadline = deadline
        self.up = False
        self.calls = 0
        self._reactor = reactor
        self._factory: Any = None
        self._observers: list[Callable[[bool], None]] = []
        self._started = False

    def __repr__(self) -> str:
        state = "up" if self.up else "down"
        return f"<RedisLink {self.address} {state}>"

    def observe(self, observer: Callable[[bool], None]) -> None:
        """Call C{observer(up)} on every change of state."""
        self._observers.append(observer)

    def start(self) -> None:
        """Connect, and keep connecting."""
        import txredisapi

        if self._started:
            return
        self._started = True
        address = self.address
        factory = txredisapi.RedisFactory(
            str(address),
            address.db or None,
            1,
            isLazy=True,
            password=address.password,
            username=address.username,
            replyTimeout=self.deadline,
            convertNumbers=False,
            charset=None,
        )
        factory.initialDelay = 0.5
        factory.maxDelay = RECONNECT_MAX
        factory.factor = 1.5
        add, remove = factory.addConnection, factory.delConnection

        def added(connection: Any) -> None:
            add(connection)
            if factory.size:
                self._changed(True)

        def removed(connection: Any) -> None:
            remove(connection)
            if not factory.size:
                self._changed(False)

        factory.addConnection = added
        factory.delConnection = removed
        self._factory = factory
        factory.startConnecting(self._endpoint())

    def _endpoint(self) -> Any:
        from twisted.internet.endpoints import (
            HostnameEndpoint,
            UNIXClientEndpoint,
            wrapClientTLS,
        )

        address = self.address
        if address.scheme == "unix":
            return UNIXClientEndpoint(self._reactor, address.path, timeout=self.deadline)
        endpoint = HostnameEndpoint(
            self._reactor, address.host, address.port, timeout=self.deadline
        )
        if address.scheme == "rediss":
            from twisted.internet import ssl

            trust = None
            if address.ca is not None:
                with open(address.ca, "rb") as pem:
                    trust = ssl.Certificate.loadPEM(pem.read())
            options = ssl.optionsForClientTLS(address.host, trustRoot=trust)
            endpoint = wrapClientTLS(options, endpoint)
        return endpoint

    def stop(self) -> Deferred[Any]:
        """Disconnect, and stop reconnecting."""
        factory, self._factory = self._factory, None
        self._started = False
        if factory is None:
            from twisted.internet.defer import succeed

            return succeed(None)
        self._changed(False)
        return factory.disconnect()

    def _changed(self, up: bool) -> None:
        if up == self.up:
            return
        self.up = up
        if up:
            log.info("shared state: connected to {address}", address=str(self.address))
        else:
            log.warn(
                "shared state: lost {address}; reconnecting",
                address=str(self.address),
            )
        for observer in list(self._observers):
            try:
                observer(up)
            except Exception:
                log.failure("a shared-state observer failed")

    def call(self, command: str, *args: Any) -> Deferred[Any]:
        """
        Send one command (a txredisapi method name and its arguments).

        @return: a Deferred that fires with the reply, or fails with
            L{SharedStateDown} (at once while the link is down, else after
            at most the deadline) or Redis' error.
        """
        if not self.up or self._factory is None:
            return fail(SharedStateDown(f"Redis at {self.address} is not connected"))
        self.calls += 1
        result: Deferred[Any] = Deferred()
        try:
            inner = getattr(self._factory.handler, command)(*args)
        except Exception as error:
            return fail(SharedStateDown(f"Redis call failed: {error}"))

        def late() -> None:
            if not result.called:
                result.errback(
                    Failure(SharedStateDown(f"Redis did not answer in {self.deadline}s"))
                )

        timer = self._reactor.callLater(self.deadline, late)

        def done(outcome: Any) -> None:
            if timer.active():
                timer.cancel()
            if result.called:
                return
            if isinstance(outcome, Failure) and not outcome.check(SharedStateDown):
                import txredisapi

                if outcome.check(txredisapi.ConnectionError):
                    outcome = Failure(SharedStateDown(outcome.getErrorMessage()))
            result.callback(outcome) if not isinstance(
                outcome, Failure
            ) else result.errback(outcome)

        inner.addBoth(done)
        return result

    def script(self, script: Script, keys: list[Any], args: list[Any]) -> Deferred[Any]:
        """Run a L{Script} (EVALSHA, loading it on a NOSCRIPT)."""
        return self.call("eval", script.source, keys, args)


class Script:
    """
    A Lua script the fleet runs in Redis.

    @ivar name: its name, for logs.
    @ivar source: its text.
    @ivar sha: its SHA-1, as EVALSHA names it.
    """

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source.encode("utf-8")
        self.sha = hashlib.sha1(self.source).hexdigest()

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:8]}>"
