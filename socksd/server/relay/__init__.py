"""
The relays: once a tunnel is up, bytes flow between the client and the
destination until both are done.

L{startRelay} is the one entry point: it joins a client and its
destination with the zero-copy relay when asked to and both transports
allow it, else with the ordinary one.

  - L{socksd.server.relay.stream}: the ordinary relay (L{Relay}), the
    destination's protocol (L{UpstreamProtocol}, L{UPSTREAM_FACTORY}) and
    the idle timeout both relays share (L{IdleWatch});
  - L{socksd.server.relay.splice}: the splice(2) relay for plain TCP
    sockets on Linux, and its pipe pool;
  - L{socksd.server.relay.gssapi}: the framing relay of tunnels whose
    client agreed GSS-API integrity or confidentiality (RFC 1961), which
    splice(2) cannot serve (L{socksd.server.relay.gssapi.startGssapiRelay});
  - L{socksd.server.relay._transport}: what the relays and the connection
    read of Twisted's transports beyond their interfaces (L{writeNow},
    L{openPlainTcp} ...), in one place.
"""

from __future__ import annotations

from typing import Any

from socksd.server.relay import splice as splicing
from socksd.server.relay._transport import (
    abortTransport,
    boundDestination,
    openPlainTcp,
    setNoDelay,
    tcpTransports,
    writeNow,
)
from socksd.server.relay.stream import (
    UPSTREAM_FACTORY,
    IdleWatch,
    Relay,
    RelayDirection,
    UpstreamProtocol,
    _Holding,
)

__all__ = [
    "Relay",
    "RelayDirection",
    "IdleWatch",
    "UpstreamProtocol",
    "UPSTREAM_FACTORY",
    "startRelay",
    "boundDestination",
    "setNoDelay",
    "abortTransport",
    "openPlainTcp",
    "tcpTransports",
    "writeNow",
]


def startRelay(
    client: Any,
    upstream: Any,
    reactor: Any,
    initialData: bytes = b"",
    clientEnded: bool = False,
    idleTimeout: float | None = None,
    noDelay: bool = True,
    record: Any = None,
    splice: bool = False,
    relayClass: Any = Relay,
) -> Any:
    """
    Join C{client} and C{upstream} (see L{socksd.server.relay.stream}).

    The client's reply must already have been written; the client's
    transport must be reading (unless C{clientEnded}).

    @param client: the client's side: a protocol with C{transport} and
        C{handler}.
    @param upstream: the destination's side, an L{UpstreamProtocol} (what
        it received before now is relayed first).
    @param reactor: an C{IReactorTime}.
    @param initialData: bytes the client sent before the tunnel was up
        (optimistic data), written to the destination first.
    @param clientEnded: the client already sent EOF.
    @param idleTimeout: see L{Relay}.
    @param noDelay: set C{TCP_NODELAY} on the destination's connection (the
        client's is the connection's business).
    @param record: the connection's log record; it learns the relay, for
        the byte counts.
    @param splice: use L{socksd.server.relay.splice.SpliceRelay}
        (zero-copy) when both transports allow it.
    @param relayClass: what makes the relay when it is not spliced: called
        like L{Relay} (the GSS-API framing relay passes its own).
    @return: the running relay: a L{Relay}, or with C{splice} possibly a
        L{socksd.server.relay.splice.SpliceRelay} (which has no throttles).
    """
    if splice:
        spliced = splicing.trySplice(
            client,
            upstream,
            reactor,
            initialData,
            clientEnded,
            idleTimeout,
            noDelay,
            record,
        )
        if spliced is not None:
            return spliced
    clientTransport = client.transport
    upstreamTransport = upstream.transport
    relay = relayClass(clientTransport, upstreamTransport, reactor, idleTimeout, record)
    if record is not None:
        record.relay = relay
    if noDelay:
        setNoDelay(upstreamTransport)
    held = upstream.handler
    if not isinstance(held, _Holding):
        held = _Holding()
    client.handler = relay.up
    upstream.handler = relay.down
    if held.lost is None:
        if not clientEnded:
            upstreamTransport.registerProducer(clientTransport, True)
        if not held.ended:
            clientTransport.registerProducer(upstreamTransport, True)
    if initialData:
        relay.up.dataReceived(initialData)
    for chunk in held.data:
        relay.down.dataReceived(chunk)
    if clientEnded:
        relay.up.readConnectionLost()
    if held.ended:
        relay.down.readConnectionLost()
    if held.lost is not None:
        relay.down.connectionLost(held.lost)
    relay._startIdleTimer()
    return relay
