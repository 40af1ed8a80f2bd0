"""
socksd's wire codecs: bytes in, immutable messages out, and back, with no
I/O and nothing from Twisted.

  - L{socksd.wire.socks4}: SOCKS4, SOCKS4A and Tor's RESOLVE over them;
  - L{socksd.wire.socks5}: RFC 1928, RFC 1929, Tor's extensions and Tor
    proposal 229, plus the UDP ASSOCIATE datagram header;
  - L{socksd.wire.socks6}: SOCKS6 (draft-olteanu-intarea-socks-6-11).

The modules name their messages alike (C{Request}, C{Reply}), so import a
module, not its names: C{from socksd.wire import socks5}.  Codecs raise only
L{socksd.errors.MalformedMessage} subclasses for bad input, and L{OutOfTurn}
when their owner sends a message out of order.
"""

from socksd.wire import socks4, socks5, socks6
from socksd.wire._buffer import OutOfTurn

__all__ = ["socks4", "socks5", "socks6", "OutOfTurn"]
