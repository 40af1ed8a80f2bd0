"""
Tests for L{socksd.shared} and L{socksd.policy.quota} that need no Redis:
the URL, sizes and periods, the local quota file, the fleet's admission
of quotas through a real server factory (every protocol's refusal), the
pipeline's gate when the fleet answers later, the SOCKS6 handshake with a
store that answers later, and the options.  The Redis-backed parts are
tested against a real redis-server in L{socksd.test.interop.test_fleet}.
"""

from __future__ import annotations

import json
import os
from calendar import timegm
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from socksd.handshake import AwaitSessions, HandshakeSettings, RequestReady, Send
from socksd.handshake._sessions import SessionAnswer, SessionQuery
from socksd.handshake.socks6 import Socks6Handshake
from socksd.policy.quota import Quota, parseQuota, parseSize, periodOf
from socksd.server import ServerConfig, SocksServerFactory
from socksd.server.limits import Admission
from socksd.shared.fleet import Fleet, FleetLimits
from socksd.shared.link import parseRedisUrl
from socksd.shared.quota import FileQuotas, chunkFor
from socksd.testing import FakeResolver, MemoryUpstream, RecordingTransport

CLIENT = IPv4Address("TCP", "192.0.2.7", 50000)
SERVER = IPv4Address("TCP", "198.51.100.9", 1080)


def utc(text: str) -> float:
    """The POSIX time of C{YYYY-MM-DDTHH:MM:SS} in UTC."""
    import time

    return float(timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")))


class RedisUrlTests(SynchronousTestCase):
    """
    L{parseRedisUrl} reads the C{--shared-state} URLs.
    """

    def test_forms(self) -> None:
        """
        redis:// with a user, password, port and database; rediss:// with
        a CA file; unix:// with a path and C{?db=}; a password alone; the
        defaults (port 6379, database 0).
        """
        address = parseRedisUrl("redis://fleet:s%40cret@192.0.2.5:6380/3")
        self.assertEqual(
            (address.scheme, address.host, address.port, address.db),
            ("redis", "192.0.2.5", 6380, 3),
        )
        self.assertEqual((address.username, address.password), ("fleet", "s@cret"))
        self.assertNotIn("cret", str(address))
        self.assertEqual(parseRedisUrl("redis://example.com").port, 6379)
        self.assertEqual(parseRedisUrl("redis://example.com").db, 0)
        tls = parseRedisUrl("rediss://redis.example.com:6390/1?ca=/etc/ca.pem")
        self.assertEqual((tls.scheme, tls.ca, tls.db), ("rediss", "/etc/ca.pem", 1))
        unix = parseRedisUrl("unix:///run/redis/redis.sock?db=2")
        self.assertEqual((unix.path, unix.db), ("/run/redis/redis.sock", 2))
        alone = parseRedisUrl("redis://secret@127.0.0.1:6379/0")
        self.assertEqual((alone.username, alone.password), (None, "secret"))

    def test_bad(self) -> None:
        """
        Another scheme, no host, a bad port or database, a unix:// without
        a path: L{ValueError} naming the URL.
        """
        for url in (
            "http://127.0.0.1:6379",
            "redis://",
            "redis://127.0.0.1:99999/0",
            "redis://127.0.0.1:6379/x",
            "unix://",
        ):
            error = self.assertRaises(ValueError, parseRedisUrl, url)
            self.assertIn(url, str(error))


class QuotaParsingTests(SynchronousTestCase):
    """
    L{parseSize}, L{parseQuota} and the calendar periods of L{periodOf}.
    """

    def test_sizes(self) -> None:
        """
        Decimal suffixes k, M, G, T; binary Ki, Mi, Gi, Ti; a trailing B.
        """
        self.assertEqual(parseSize("300k"), 300_000)
        self.assertEqual(parseSize("10G"), 10_000_000_000)
        self.assertEqual(parseSize("1.5T"), 1_500_000_000_000)
        self.assertEqual(parseSize("512Mi"), 512 * 2**20)
        self.assertEqual(parseSize("2GiB"), 2 * 2**30)
        self.assertEqual(parseSize("123"), 123)
        for bad in ("", "k", "-1k", "0", "ten"):
            self.assertRaises(ValueError, parseSize, bad)

    def test_quotas(self) -> None:
        """
        C{SIZE/PERIOD} for hour, day, week and month; anything else is a
        L{ValueError} naming the choices.
        """
        self.assertEqual(parseQuota("10G/month"), Quota(10**10, "month"))
        self.assertEqual(parseQuota("300k/day", "rule:r"), Quota(300_000, "day", "rule:r"))
        self.assertEqual(parseQuota("1Gi/week").period, "week")
        self.assertEqual(parseQuota("50M/Hour").period, "hour")
        error = self.assertRaises(ValueError, parseQuota, "10G/year")
        self.assertIn("hour, day, week, month", str(error))
        self.assertRaises(ValueError, parseQuota, "10G")

    def test_periods(self) -> None:
        """
        Periods are calendar-aligned in UTC: the hour, the day, the ISO
        week from Monday, the month (to the first of the next, across the
        year's end).
        """
        now = utc("2025-12-31T23:59:59")
        self.assertEqual(
            periodOf("hour", now),
            ("2025-12-31T23", utc("2025-12-31T23:00:00"), utc("2026-01-01T00:00:00")),
        )
        self.assertEqual(
            periodOf("day", now),
            ("2025-12-31", utc("2025-12-31T00:00:00"), utc("2026-01-01T00:00:00")),
        )
        self.assertEqual(
            periodOf("week", now),
            ("2026-W01", utc("2025-12-29T00:00:00"), utc("2026-01-05T00:00:00")),
        )
        self.assertEqual(
            periodOf("month", now),
            ("2025-12", utc("2025-12-01T00:00:00"), utc("2026-01-01T00:00:00")),
        )
        self.assertEqual(periodOf("month", utc("2024-02-29T12:00:00"))[2], utc("2024-03-01T00:00:00"))


class FileQuotasTests(SynchronousTestCase):
    """
    L{FileQuotas}: the counts of one process in a file.
    """

    def test_leaseAndRestart(self) -> None:
        """
        Leases are granted up to the quota; the counts are written after
        the interval (and on stop), atomically, and a new store on the
        same file (a restart) finds them.
        """
        path = self.mktemp()
        clock = MemoryReactorClock()
        store = FileQuotas(path, clock)
        quota = Quota(10_000, "day")
        name, _, end = periodOf("day", clock.seconds() or __import__("time").time())
        self.assertEqual(self.successResultOf(store.lease(quota, "user/a", name, end, 6000)), 6000)
        self.assertEqual(self.successResultOf(store.lease(quota, "user/a", name, end, 6000)), 4000)
        self.assertEqual(self.successResultOf(store.lease(quota, "user/a", name, end, 6000)), 0)
        self.assertFalse(os.path.exists(path))
        clock.advance(FileQuotas.INTERVAL)
        with open(path) as f:
            self.assertEqual(json.load(f)["periods"][f"day:{name}"], {"user/a": 10_000})
        store.adjust(quota, "user/a", name, end, -1000)
        store.stop()
        again = FileQuotas(path, MemoryReactorClock())
        self.assertEqual(again.used(quota, "user/a", __import__("time").time()), 9000)

    def test_badFile(self) -> None:
        """A file that is not a quota file is a L{ValueError} naming it."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[1, 2]")
        error = self.assertRaises(ValueError, FileQuotas, path, MemoryReactorClock())
        self.assertIn(path, str(error))

    def test_chunks(self) -> None:
        """A lease is 1/64 of the quota, from 4 KiB to 1 MiB."""
        self.assertEqual(chunkFor(Quota(1000, "day")), 4096)
        self.assertEqual(chunkFor(Quota(64_000_000, "day")), 1_000_000)
        self.assertEqual(chunkFor(Quota(10**12, "day")), 2**20)


def harness(testCase: SynchronousTestCase, fleet: Fleet, **config: Any) -> tuple[SocksServerFactory, MemoryUpstream]:
    """A factory with C{fleet}'s limits (no Redis: quotas in a file)."""
    clock = MemoryReactorClock()
    upstream = MemoryUpstream()
    factory = SocksServerFactory(
        clock,
        upstream=upstream,
        resolver=FakeResolver({}),
        config=ServerConfig(**config),
    )
    factory.limits = FleetLimits(fleet)
    return factory, upstream


def connect(factory: SocksServerFactory, *chunks: bytes) -> RecordingTransport:
    transport = RecordingTransport(SERVER, CLIENT)
    protocol = factory.buildProtocol(CLIENT)
    protocol.makeConnection(transport)
    for chunk in chunks:
        protocol.dataReceived(chunk)
    return transport


class LocalQuotaAdmissionTests(SynchronousTestCase):
    """
    Without Redis, a client over a rule's quota (counted in the quota
    file, per client address without a user) is refused by every protocol
    with its "not allowed" reply.
    """

    def setUp(self) -> None:
        import time

        from socksd.policy import Policy
        from socksd.policy.rules import DestinationRule

        self.clock = MemoryReactorClock()
        self.store = FileQuotas(self.mktemp(), self.clock)
        self.fleet = Fleet(self.clock)
        self.fleet.quotas = self.store
        self.policy = Policy(
            destinationRules=[DestinationRule.parse("pass", quota="1000/day", name="r")]
        )
        quota = self.policy.destinationRules[0].quota
        name, _, end = periodOf("day", time.time())
        self.store.lease(quota, "rule:r/client:192.0.2.7", name, end, 1000)

    def test_refusals(self) -> None:
        """
        SOCKS4: 91; SOCKS5: 02; HTTP CONNECT: 403; SOCKS6: 02 (in its
        Operation Reply); nothing is connected; the log reason names the
        quota.
        """
        from socksd.wire.socks6 import Request, Socks6ClientCodec
        from socksd.address import Destination
        from ipaddress import IPv4Address as IP

        factory, upstream = harness(self, self.fleet, httpConnect=True)
        factory.policy = self.policy
        socks4 = connect(factory, bytes.fromhex("04 01 0050 c0000201") + b"alice\x00")
        self.assertEqual(socks4.value()[:2], bytes.fromhex("005b"))
        socks5 = connect(
            factory, bytes.fromhex("05 01 00"), bytes.fromhex("05 01 00 01 c0000201 0050")
        )
        self.assertEqual(socks5.value()[2:4], bytes.fromhex("0502"))
        http = connect(factory, b"CONNECT 192.0.2.1:80 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b" 403 ", http.value().split(b"\r\n")[0] + b" ")
        codec = Socks6ClientCodec()
        socks6 = connect(factory, codec.send(Request(1, Destination(IP("192.0.2.1"), 80))))
        replies = codec.receiveData(socks6.value())
        self.assertEqual(replies[-1].code, 2)
        for transport in (socks4, socks5, http, socks6):
            self.assertTrue(transport.disconnecting)
        self.assertEqual(upstream.requests if hasattr(upstream, "requests") else [], [])

    def test_gateWaits(self) -> None:
        """
        When the fleet answers later (Redis), the pipeline waits: nothing
        is replied until the answer; a refusal then sends the reply.
        """
        from socksd.errors import NotAllowed

        pending: list[Deferred[Any]] = []

        class Later(Fleet):
            def admit(self, admission: Any, caps: Any, quotas: Any) -> Any:
                d: Deferred[Any] = Deferred()
                pending.append(d)
                return d

        factory, upstream = harness(self, Later(self.clock))
        factory.policy = self.policy
        transport = connect(
            factory, bytes.fromhex("05 01 00"), bytes.fromhex("05 01 00 01 c0000201 0050")
        )
        self.assertEqual(transport.value(), bytes.fromhex("0500"))
        self.assertEqual(len(pending), 1)
        pending[0].callback((NotAllowed("quota exhausted: x"), "quota exhausted: x"))
        self.assertEqual(transport.value()[2:4], bytes.fromhex("0502"))
        self.assertTrue(transport.disconnecting)

    def test_plainAdmission(self) -> None:
        """Without a fleet, an admission has no gate (nothing waits)."""
        self.assertIsNone(Admission.gate)


class AsyncStore:
    """A SOCKS6 session store that answers later (as the Redis one)."""

    def __init__(self) -> None:
        self.queries: list[tuple[SessionQuery, Deferred[SessionAnswer]]] = []

    def consult(self, query: SessionQuery) -> Deferred[SessionAnswer]:
        d: Deferred[SessionAnswer] = Deferred()
        self.queries.append((query, d))
        return d


class Socks6AwaitTests(SynchronousTestCase):
    """
    The SOCKS6 handshake with a store that answers later: an
    L{AwaitSessions} action, then C{sessionsAnswered}.
    """

    def test_sessionLater(self) -> None:
        """
        A request naming a session asks the store once (with its window
        request and token) and waits; bytes and EOF meanwhile are kept;
        the answer (a session, the token accepted) gives the successful
        reply with Session OK and Idempotence Accepted, then the request.
        An unknown session is refused with Session Invalid.
        """
        from socksd.handshake._sessions import TokenWindow
        from socksd.wire.socks6 import (
            AuthenticationReply,
            IdempotenceAcceptedOption,
            IdempotenceWindowOption,
            Request,
            SessionIdOption,
            IdempotenceExpenditureOption,
            SessionOkOption,
            Socks6ClientCodec,
        )
        from socksd.address import Destination
        from ipaddress import IPv4Address as IP

        store = AsyncStore()
        handshake = Socks6Handshake(HandshakeSettings(), store, "192.0.2.7")
        client = Socks6ClientCodec()
        data = client.send(
            Request(
                1,
                Destination(IP("192.0.2.1"), 80),
                options=(SessionIdOption(b"\x01" * 16), IdempotenceExpenditureOption(7)),
            )
        )
        actions = handshake.dataReceived(data)
        self.assertEqual(len(actions), 1)
        self.assertIsInstance(actions[0], AwaitSessions)
        [(query, d)] = store.queries
        self.assertEqual((query.sessionId, query.token), (b"\x01" * 16, 7))
        self.assertEqual(handshake.dataReceived(b"early"), [])
        self.assertEqual(handshake.clientEnded(), [])

        class Session:
            sessionId = b"\x01" * 16
            user = None
            credentials = None
            window = TokenWindow(8, 4)
            requests = 1

        actions = handshake.sessionsAnswered(SessionAnswer(Session(), False, True))
        self.assertIsInstance(actions[0], Send)
        self.assertIsInstance(actions[1], RequestReady)
        reply = client.receiveData(actions[0].data)[0]
        self.assertIsInstance(reply, AuthenticationReply)
        self.assertTrue(reply.success)
        kinds = {type(option) for option in reply.options}
        self.assertTrue(
            {SessionOkOption, IdempotenceAcceptedOption, IdempotenceWindowOption} <= kinds
        )
        self.assertTrue(handshake.ended)
        self.assertEqual(handshake.sessionsAnswered(SessionAnswer()), [])


class SharedOptionsTests(SynchronousTestCase):
    """
    The options of C{twistd socksd} for shared state and quotas.
    """

    def parse(self, *args: str) -> Any:
        from socksd.service.options import Options

        options = Options()
        options.parseOptions(list(args))
        return options

    def test_defaults(self) -> None:
        """Without them nothing is shared: open failure policy, the prefix socksd:."""
        options = self.parse()
        self.assertIsNone(options["shared-state"])
        self.assertEqual(options["shared-state-failure"], "open")
        self.assertEqual(options["shared-state-prefix"], "socksd:")
        self.assertIsNone(options["quota-per-user"])

    def test_quota(self) -> None:
        """C{--quota-per-user} is parsed into a L{Quota}."""
        options = self.parse("--quota-per-user", "10G/month")
        self.assertEqual(options["quota-per-user"], Quota(10**10, "month"))

    def test_usageErrors(self) -> None:
        """
        A bad URL, failure policy or quota is a usage error naming the
        option; so are quotas with C{--workers} without shared state.
        """
        for args, word in (
            (["--shared-state", "http://x"], "--shared-state"),
            (["--shared-state-failure", "maybe"], "--shared-state-failure"),
            (["--quota-per-user", "10G/year"], "--quota-per-user"),
            (["--quota-per-user", "1G/day", "--workers", "2"], "--workers"),
        ):
            error = self.assertRaises(usage.UsageError, self.parse, *args)
            self.assertIn(word, str(error))
