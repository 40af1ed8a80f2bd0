"""
Tests for L{socksd.service.metrics} (imported through L{socksd.metrics}):
counters fed by a real server on loopback, scraped over HTTP in
Prometheus' text format.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from socksd.metrics import Metrics, metricsSite, refusalKind
from socksd.policy import Policy
from socksd.tap import Options
from socksd.testing import EchoProtocol
from socksd.test.test_loopback import socks5ReplyEnd, socks5Request
from socksd.test.test_policy_server import LoopbackBase


class RefusalKindTests(SynchronousTestCase):
    """L{refusalKind} sorts end reasons into few label values."""

    def test_kinds(self) -> None:
        """Each kind of reason gets its label; anything else is C{other}."""
        self.assertEqual(refusalKind("client refused by policy"), "policy")
        self.assertEqual(refusalKind("too many connections (5 in total)"), "limit")
        self.assertEqual(refusalKind("handshake timeout"), "timeout")
        self.assertEqual(refusalKind("malformed SOCKS5 request: x"), "malformed")
        self.assertEqual(refusalKind("authentication failed for user 'a'"), "auth")
        self.assertEqual(refusalKind("client closed"), "other")
        self.assertEqual(refusalKind(None), "other")

    def test_option(self) -> None:
        """C{--metrics} takes a server endpoint description."""
        options = Options()
        options.parseOptions(["--metrics", "tcp:9180:interface=127.0.0.1"])
        self.assertEqual(options["metrics"], "tcp:9180:interface=127.0.0.1")


class ScrapeTests(LoopbackBase):
    """A server's metrics, scraped over loopback."""

    async def scrape(self, accept: bytes | None = None) -> str:
        """GET /metrics from the metrics site, with C{accept} if given."""
        agent = Agent(reactor)
        url = f"http://127.0.0.1:{self.metricsPort}/metrics".encode("ascii")
        headers = None if accept is None else Headers({b"accept": [accept]})
        response = await self.wait(agent.request(b"GET", url, headers))
        self.assertEqual(response.code, 200)
        contentType = response.headers.getRawHeaders(b"content-type")[0]
        expected = b"application/openmetrics-text" if accept else b"text/plain"
        self.assertTrue(contentType.startswith(expected), contentType)
        return (await self.wait(readBody(response))).decode("utf-8")

    async def test_openMetrics(self) -> None:
        """
        A scraper that asks for OpenMetrics gets it (its text ends with
        C{# EOF}); one that asks for nothing gets Prometheus' text format.
        """
        self.metricsPort = await self.listen(metricsSite(Metrics()))
        text = await self.scrape(b"application/openmetrics-text; version=1.0.0")
        self.assertTrue(text.endswith("# EOF\n"), text[-40:])
        self.assertIn("socksd_tunnels 0.0", text)
        self.assertNotIn("# EOF", await self.scrape())

    async def test_connectionsAndBytes(self) -> None:
        """
        After one tunnel that relayed 5 bytes each way and one request the
        rules refused, the scrape shows both connections by reply, the
        bytes, a handshake observation per request, no open tunnel, and a
        policy refusal.
        """
        echoPort = await self.listen(Factory.forProtocol(EchoProtocol))
        resolver = self.hostsResolver("127.0.0.1 inside.test\n")
        factory = await self.serveSocks(
            resolver, Policy.fromOptions(denyDestinations=["127.0.0.2/32"])
        )
        metrics = Metrics()
        factory.metrics = metrics
        self.metricsPort = await self.listen(metricsSite(metrics))
        client = await self.connect(socks5Request(echoPort), socks5ReplyEnd)
        await self.wait(client.reply)
        client.expected = 5
        client.transport.write(b"hello")
        await self.wait(client.allReceived)
        refused = await self.connect(
            socks5Request(echoPort, address=b"\x7f\x00\x00\x02"), socks5ReplyEnd
        )
        self.assertEqual((await self.wait(refused.reply))[3], 0x02)
        await self.wait(refused.closed)
        text = await self.scrape()
        self.assertIn("socksd_tunnels 1.0", text)
        client.transport.loseConnection()
        await self.wait(client.closed)
        from twisted.internet.task import deferLater

        await deferLater(reactor, 0.1, lambda: None)
        text = await self.scrape()
        self.assertIn(
            'socksd_connections_total{command="connect",reply="SUCCEEDED",version="5"} 1.0',
            text,
        )
        self.assertIn(
            'socksd_connections_total{command="connect",reply="NOT_ALLOWED",version="5"} 1.0',
            text,
        )
        self.assertIn('socksd_bytes_relayed_total{direction="up"} 5.0', text)
        self.assertIn('socksd_bytes_relayed_total{direction="down"} 5.0', text)
        self.assertIn("socksd_handshake_seconds_count 2.0", text)
        self.assertIn("socksd_tunnels 0.0", text)
        self.assertIn('socksd_refused_total{reason="policy"} 1.0', text)
        self.assertIn("socksd_auth_failures_total 0.0", text)
