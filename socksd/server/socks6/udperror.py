"""
SOCKS6 Datagram Error messages (the UDP Error stack option): ICMP errors
about the datagrams a UDP association sent, read from the kernel.

With C{IP_RECVERR} (and C{IPV6_RECVERR}) on a UDP socket, Linux queues
every ICMP error about a datagram the socket sent, with the failed
datagram's destination, the ICMP type and code and the address of the host
that reported it, on the socket's error queue (C{recvmsg} with
C{MSG_ERRQUEUE}).  L{ErrorReportingPort} is Twisted's UDP port that reads
that queue and hands each error its protocol can relay to
C{datagramErrorReceived(errorCode, address, reporter)}.

The draft's error codes are network unreachable, host unreachable, TTL
expired and datagram too big (IPv6); L{errorCodeFor} maps ICMP and ICMPv6
to them.  ICMP errors without such a code (port unreachable above all) and
errors the kernel raises itself (C{SO_EE_ORIGIN_LOCAL}) are read and
dropped.

A plain Twisted UDP port cannot have C{IP_RECVERR}: the queued errors make
the socket report C{EPOLLERR}, which the reactor takes for a lost
connection, and C{recvfrom} then fails with errors the port does not
expect.  L{ErrorReportingPort} empties the queue in both cases and keeps
listening; and it reads the queue before each send, since a pending error
would fail the send and lose the datagram.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from twisted.internet import udp
from twisted.internet.interfaces import IHalfCloseableDescriptor, IReactorFDSet
from twisted.internet.posixbase import PosixReactorBase
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socksd.server._udp import MAX_DATAGRAM
from socksd.wire.socks6 import UdpErrorCode

__all__ = [
    "ErrorReportingPort",
    "errorCodeFor",
    "parseExtendedError",
    "listenReportingErrors",
    "adoptReportingErrors",
]

log = Logger()

_LINUX = sys.platform.startswith("linux")
# Linux's values (the socket module lacks them).
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
_MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
# struct sock_extended_err: errno, origin, type, code, pad, info, data.
_EXTENDED_ERR = struct.Struct("=IBBBBII")
# Errors recvfrom reports for a pending ICMP error: read the queue instead.
_ICMP_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.ENETDOWN,
        errno.EMSGSIZE,
        errno.EPROTO,
        errno.EACCES,
        errno.ETIMEDOUT,
        errno.ENOPROTOOPT,
    }
)

# ICMP (IPv4) destination-unreachable codes.
_ICMP_NETWORK = frozenset({0, 6, 9, 11})
_ICMP_HOST = frozenset({1, 7, 10, 12})


def errorCodeFor(origin: int, icmpType: int, icmpCode: int) -> int | None:
    """
    The Datagram Error code for an ICMP error.

    @param origin: C{SO_EE_ORIGIN_ICMP} (2) or C{SO_EE_ORIGIN_ICMP6} (3).
    @return: a L{UdpErrorCode}, or L{None} for an error the draft has no
        code for (port unreachable, for one) or not from ICMP.
    """
    if origin == SO_EE_ORIGIN_ICMP:
        if icmpType == 3:
            if icmpCode in _ICMP_NETWORK:
                return UdpErrorCode.NETWORK_UNREACHABLE
            if icmpCode in _ICMP_HOST:
                return UdpErrorCode.HOST_UNREACHABLE
            return None
        if icmpType == 11:
            return UdpErrorCode.TTL_EXPIRED
        return None
    if origin == SO_EE_ORIGIN_ICMP6:
        if icmpType == 1:
            if icmpCode == 0:
                return UdpErrorCode.NETWORK_UNREACHABLE
            if icmpCode in (1, 2, 3, 5, 6):
                return UdpErrorCode.HOST_UNREACHABLE
            return None
        if icmpType == 2:
            return UdpErrorCode.DATAGRAM_TOO_BIG
        if icmpType == 3:
            return UdpErrorCode.TTL_EXPIRED
    return None


def _offender(data: bytes) -> IPv4Address | IPv6Address | None:
    """The C{SO_EE_OFFENDER} address after a C{sock_extended_err}."""
    if len(data) < 2:
        return None
    family = int.from_bytes(data[:2], sys.byteorder)
    if family == socket.AF_INET and len(data) >= 8:
        found: IPv4Address | IPv6Address = IPv4Address(data[4:8])
    elif family == socket.AF_INET6 and len(data) >= 24:
        found = IPv6Address(data[8:24])
        mapped = found.ipv4_mapped
        if mapped is not None:
            found = mapped
    else:
        return None
    return found


def parseExtendedError(
    level: int, kind: int, data: bytes
) -> tuple[int, IPv4Address | IPv6Address] | None:
    """
    Read one C{IP_RECVERR} / C{IPV6_RECVERR} control message.

    @param level: the control message's level (C{SOL_IP} or C{SOL_IPV6}).
    @param kind: its type (C{IP_RECVERR} or C{IPV6_RECVERR}).
    @param data: its data: a C{struct sock_extended_err} and the offender's
        C{sockaddr}.
    @return: the Datagram Error code and the reporter's address, or L{None}
        when the error is not one to relay (see L{errorCodeFor}) or has no
        reporter.
    """
    if (level, kind) not in (
        (socket.IPPROTO_IP, IP_RECVERR),
        (socket.IPPROTO_IPV6, IPV6_RECVERR),
    ):
        return None
    if len(data) < _EXTENDED_ERR.size:
        return None
    _, origin, icmpType, icmpCode, _, _, _ = _EXTENDED_ERR.unpack_from(data)
    code = errorCodeFor(origin, icmpType, icmpCode)
    if code is None:
        return None
    reporter = _offender(data[_EXTENDED_ERR.size :])
    if reporter is None:
        return None
    return code, reporter


@implementer(IHalfCloseableDescriptor)
class ErrorReportingPort(udp.Port):
    """
    A Twisted UDP port with C{IP_RECVERR} on, that reads the socket's error
    queue (see the module docstring).  Its protocol gets
    C{datagramErrorReceived(errorCode, (host, port), reporter)} for each
    error with a Datagram Error code.

    @ivar errorsRead: how many queued errors were read (relayed or not).
    @ivar reportingErrors: whether C{IP_RECVERR} is on.
    """

    errorsRead = 0
    reportingErrors = False

    def enableErrors(self) -> bool:
        """
        Turn C{IP_RECVERR} on (and C{IPV6_RECVERR} on an IPv6 socket).

        @return: whether the kernel took it.
        """
        try:
            if self.addressFamily == socket.AF_INET6:
                self.socket.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
            else:
                self.socket.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        except OSError:
            return False
        self.reportingErrors = True
        return True

    def readErrors(self) -> int:
        """
        Empty the error queue, handing each error with a code to the
        protocol.

        @return: how many errors were read.
        """
        read = 0
        while read < 1000:
            try:
                _, ancillary, _, address = self.socket.recvmsg(
                    self.maxPacketSize, 1024, _MSG_ERRQUEUE
                )
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                if error.errno == errno.EAGAIN:
                    break
                log.debug("reading the UDP error queue failed: {error}", error=error)
                break
            read += 1
            for level, kind, data in ancillary:
                parsed = parseExtendedError(level, kind, data)
                if parsed is None or not address:
                    continue
                code, reporter = parsed
                report = getattr(self.protocol, "datagramErrorReceived", None)
                if report is None:
                    continue
                try:
                    report(code, (address[0], address[1]), reporter)
                except BaseException:
                    log.failure("handling a Datagram Error failed")
        self.errorsRead += read
        return read

    def write(self, datagram: bytes, addr: Any = None) -> None:
        """
        Read the error queue, then send as C{udp.Port} does: on Linux a
        send fails with the socket's pending error (an ICMP error not read
        yet), and C{udp.Port} drops the datagram silently on
        C{ECONNREFUSED}.  One more system call per datagram, on
        associations that asked for errors only.
        """
        self.readErrors()
        if addr is None or self._connectedAddr:
            return super().write(datagram, addr)
        try:
            return self.socket.sendto(datagram, addr)
        except OSError as error:
            if error.errno not in _ICMP_ERRNOS:
                # Twisted's own handling: EINTR, EMSGSIZE, bad addresses.
                return super().write(datagram, addr)
        # An ICMP error arrived between reading the queue and sending, and
        # the kernel reported it on this send instead of sending: read it,
        # then send once more, so no datagram is lost to an earlier error.
        self.readErrors()
        return super().write(datagram, addr)

    def doRead(self) -> None:
        """Read the error queue, then datagrams as C{udp.Port} does."""
        self.readErrors()
        read = 0
        for _ in range(1000):
            if read >= self.maxThroughput:
                return
            try:
                data, addr = self.socket.recvfrom(self.maxPacketSize)
            except OSError as se:
                no = se.args[0]
                if no in udp._sockErrReadIgnore:
                    return
                if no in _ICMP_ERRNOS:
                    self.readErrors()
                    continue
                raise
            read += len(data)
            if self.addressFamily == socket.AF_INET6:
                addr = addr[:2]
            try:
                self.protocol.datagramReceived(data, addr)
            except BaseException:
                log.failure("a UDP protocol failed")

    def readConnectionLost(self, reason: Failure) -> None:
        """
        The reactor saw C{EPOLLERR} (queued errors) and stopped reading:
        read the queue and listen on; anything else ends the port.
        """
        if self.connected:
            # The queue may already be empty: a write earlier in this
            # reactor iteration read it.  Either way the socket is fine:
            # read what is queued, clear any pending error, listen on.
            self.readErrors()
            try:
                self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            except OSError:
                self.connectionLost(reason)
                return
            self.startReading()
            return
        self.connectionLost(reason)

    def writeConnectionLost(self, reason: Failure) -> None:
        """Nothing is written through the reactor's writers."""


def _usable(reactor: Any) -> bool:
    """A reactor whose UDP ports are C{udp.Port}s on real sockets."""
    return (
        _LINUX
        and isinstance(reactor, PosixReactorBase)
        and IReactorFDSet.providedBy(reactor)
    )


def listenReportingErrors(
    reactor: Any, protocol: Any, interface: str, port: int = 0
) -> ErrorReportingPort | None:
    """
    Listen for UDP on C{interface} and C{port} (0: any), with ICMP errors
    reported.

    @return: the port, or L{None} when the reactor or the kernel cannot
        (the caller then listens as usual).
    """
    if not _usable(reactor):
        return None
    listening = ErrorReportingPort(port, protocol, interface, MAX_DATAGRAM, reactor)
    listening.startListening()
    if not listening.enableErrors():
        listening.stopListening()
        return None
    return listening


def adoptReportingErrors(reactor: Any, fileno: int, family: int, protocol: Any) -> Any:
    """
    C{reactor.adoptDatagramPort}, with ICMP errors reported when the reactor
    and the kernel can (the port's C{reportingErrors} then says so).
    """
    if _usable(reactor):
        port = ErrorReportingPort._fromListeningDescriptor(
            reactor, fileno, family, protocol, maxPacketSize=MAX_DATAGRAM
        )
        port.startListening()
        port.enableErrors()
        return port
    return reactor.adoptDatagramPort(
        fileno, family, protocol, maxPacketSize=MAX_DATAGRAM
    )
