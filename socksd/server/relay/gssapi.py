"""
The framing relay: a tunnel whose client agreed GSS-API integrity or
confidentiality (RFC 1961 section 5).

Each chunk the destination sends is wrapped with the connection's security
context (C{gss_wrap}, with confidentiality at that level) and written to
the client as one RFC 1961 data frame (C{01 03}, a two-octet length, the
token); the client's frames are unwrapped (C{gss_unwrap}) and their data
written to the destination.  A chunk larger than a token can carry is
split.  A frame that does not unwrap, a wrong message type, or a token
without confidentiality at that level, closes the tunnel (logged).

The byte counts (L{GssapiRelay.byteCounts}, the log event's C{bytesUp}
and C{bytesDown}, RADIUS accounting) are those of the data relayed, not of
the frames.

splice(2) cannot serve such tunnels (every byte passes through the
context), so L{startGssapiRelay} starts them with this relay whatever
C{--no-splice} says (and logs that once).  Backpressure, half-close, teardown, the idle
timeout and bandwidth caps are the ordinary relay's
(L{socksd.server.relay.stream.Relay}).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from twisted.logger import Logger

from socksd.errors import MalformedMessage
from socksd.server.relay._transport import abortTransport, unregisterProducer
from socksd.server.relay.stream import Relay, RelayDirection
from socksd.wire.gssapi import MTYP_DATA, FrameDecoder, encodeFrame

__all__ = ["GssapiRelay", "UnwrappingDirection", "WrappingDirection", "startGssapiRelay"]

log = Logger()

#: The log said once that GSS-API tunnels are not spliced.
_saidNoSplice = False


class UnwrappingDirection(RelayDirection):
    """
    Client to destination: RFC 1961 frames in, their data out.  C{count}
    is the data's bytes.
    """

    __slots__ = ("frames", "tunnel")

    def __init__(self, relay: GssapiRelay, source: Any, sink: Any, tunnel: Any) -> None:
        super().__init__(relay, source, sink)
        self.tunnel = tunnel
        self.frames = FrameDecoder(MTYP_DATA)

    def dataReceived(self, data: bytes) -> None:
        """Unwrap every whole frame, and pass its data on."""
        if self.relay.closed:
            return
        frames = self.frames
        frames.feed(data)
        protection = self.tunnel.protection
        encrypt = self.tunnel.encrypt
        out = []
        try:
            while True:
                frame = frames.next()
                if frame is None:
                    break
                plain, encrypted = protection.unwrap(frame.token)
                if encrypt and not encrypted:
                    raise MalformedMessage("a data token without confidentiality")
                out.append(plain)
        except Exception as error:
            self.relay._broken(f"bad GSS-API frame from the client: {error}")
            return
        if out:
            plain = b"".join(out)
            self.count += len(plain)
            self.sink.write(plain)
        if self.throttle is not None:
            self.throttle.consume(len(data))


class WrappingDirection(RelayDirection):
    """
    Destination to client: data in, RFC 1961 frames out.  C{count} is the
    data's bytes.
    """

    __slots__ = ("tunnel", "limit")

    def __init__(self, relay: GssapiRelay, source: Any, sink: Any, tunnel: Any) -> None:
        super().__init__(relay, source, sink)
        self.tunnel = tunnel
        self.limit = tunnel.protection.wrapLimit(tunnel.encrypt)

    def dataReceived(self, data: bytes) -> None:
        """Wrap C{data}, in as many frames as it needs."""
        if self.relay.closed:
            return
        self.count += len(data)
        wrap = self.tunnel.protection.wrap
        encrypt = self.tunnel.encrypt
        limit = self.limit
        try:
            frames = [
                encodeFrame(MTYP_DATA, wrap(data[i : i + limit], encrypt))
                for i in range(0, len(data), limit)
            ]
        except Exception as error:
            self.relay._broken(f"wrapping for the client failed: {error}")
            return
        self.sink.write(b"".join(frames))
        if self.throttle is not None:
            self.throttle.consume(len(data))


class GssapiRelay(Relay):
    """
    A L{Relay} whose client side speaks RFC 1961 frames; see the module
    docstring.

    @ivar tunnel: the handshake's L{socksd.handshake.socks5.GssapiTunnel}.
    """

    __slots__ = ("tunnel",)

    def __init__(
        self,
        clientTransport: Any,
        upstreamTransport: Any,
        reactor: Any,
        idleTimeout: float | None = None,
        record: Any = None,
        *,
        tunnel: Any,
    ) -> None:
        super().__init__(clientTransport, upstreamTransport, reactor, idleTimeout, record)
        self.tunnel = tunnel
        self.up = UnwrappingDirection(self, clientTransport, upstreamTransport, tunnel)
        self.down = WrappingDirection(self, upstreamTransport, clientTransport, tunnel)

    def _broken(self, reason: str) -> None:
        """The client broke RFC 1961, or the context failed: drop both."""
        if self.closed:
            return
        log.warn("closing a GSS-API tunnel: {reason}", reason=reason)
        if self._record is not None:
            self._record.setReason(reason)
        self.closed = True
        self._stopIdleTimer()
        for transport in (self.up.source, self.down.source):
            unregisterProducer(transport)
            abortTransport(transport)


def startGssapiRelay(
    client: Any,
    upstream: Any,
    reactor: Any,
    tunnel: Any,
    splice: bool = False,
    **kwargs: Any,
) -> GssapiRelay:
    """
    L{socksd.server.relay.startRelay} for a tunnel whose client agreed
    integrity or confidentiality: a L{GssapiRelay}, never splice(2) (when
    C{splice} was allowed, the log says once why it is not used).  The
    plain bytes the client sent inside its request's frame
    (C{tunnel.early}) reach the destination first.

    @param tunnel: the handshake's L{socksd.handshake.socks5.GssapiTunnel}.
    @param kwargs: L{socksd.server.relay.startRelay}'s.
    """
    global _saidNoSplice
    from socksd.server.relay import startRelay

    if splice and not _saidNoSplice:
        _saidNoSplice = True
        log.info(
            "GSS-API protected tunnels are relayed by the framing relay,"
            " not splice(2): every byte is wrapped or unwrapped"
        )
    early, tunnel.early = tunnel.early, b""
    if early:
        upstream.transport.write(early)
    relay = startRelay(
        client, upstream, reactor, splice=False, relayClass=partial(GssapiRelay, tunnel=tunnel),
        **kwargs,
    )
    relay.up.count += len(early)
    return relay
