"""
DTLS 1.2 over a Twisted datagram socket, with pyOpenSSL and memory BIOs:
what both ends of SOCKS6's DTLS relay share (the proxy's port,
L{socksd.server.socks6.dtls}; the client, L{socksd.client.socks6}).

A L{DtlsChannel} is one DTLS conversation with one peer: datagrams from
the peer go in (L{DtlsChannel.datagramReceived}), the records OpenSSL writes
go out through a C{send(datagram)} function, packed into datagrams of at
most the channel's MTU (L{splitRecords}), and the handshake's
retransmissions run on the reactor's clock (C{DTLSv1_get_timeout} and
C{DTLSv1_handle_timeout}).  Each application record is one message: the
channel hands each record's plaintext to its C{received} function and
writes each message as one record (at most L{MAX_PLAINTEXT} bytes, the
largest DTLS record).

Only DTLS 1.2 is spoken (the record splitting reads DTLS 1.2 record
headers).  pyOpenSSL is optional on PyPy: L{dtlsMissing} says why DTLS
cannot be used here, naming C{socksd[tls]}.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.logger import Logger

__all__ = [
    "DtlsChannel",
    "DTLS1_2_VERSION",
    "DEFAULT_MTU",
    "MAX_DATAGRAM",
    "MAX_PLAINTEXT",
    "clientContext",
    "dtlsMissing",
    "serverContext",
    "splitRecords",
]

log = Logger()

#: DTLS 1.2's version number, for C{set_min_proto_version} and
#: C{set_max_proto_version} (pyOpenSSL has no constant for it).
DTLS1_2_VERSION = 0xFEFD
#: The largest plaintext one DTLS record carries.
MAX_PLAINTEXT = 16384
#: The largest datagram a channel sends for its handshake (a size every
#: IPv6 path carries, as QUIC's minimum); application records may be larger.
DEFAULT_MTU = 1200
#: A DTLS 1.2 record header: type, version, epoch, sequence number, length.
RECORD_HEADER = 13
#: The largest datagram a DTLS socket reads whole (give it as the UDP
#: port's C{maxPacketSize}: Twisted's default, 8192, would cut records).
MAX_DATAGRAM = 65535


def dtlsMissing() -> str | None:
    """
    Why DTLS cannot be used here (pyOpenSSL missing, as it may be on PyPy,
    or too old for DTLS timeouts and cookies), or L{None} when it can.
    """
    try:
        from OpenSSL import SSL
    except ImportError as error:
        return f"DTLS needs pyOpenSSL ({error}): pip install 'socksd[tls]'"
    needed = (
        hasattr(SSL, "DTLS_METHOD")
        and hasattr(SSL.Connection, "DTLSv1_listen")
        and hasattr(SSL.Connection, "DTLSv1_get_timeout")
        and hasattr(SSL.Context, "set_cookie_generate_callback")
    )
    if not needed:
        return "DTLS needs pyOpenSSL 23.1 or later: pip install -U 'socksd[tls]'"
    return None


def splitRecords(data: bytes, mtu: int = DEFAULT_MTU) -> list[bytes]:
    """
    Pack the DTLS records in C{data} (what OpenSSL wrote to a memory BIO,
    records back to back) into datagrams of at most C{mtu} bytes; a record
    larger than C{mtu} goes alone.  Bytes that do not parse as records go
    out as they are, in one datagram.
    """
    datagrams: list[bytes] = []
    current = b""
    offset = 0
    while offset < len(data):
        if len(data) - offset < RECORD_HEADER:
            end = len(data)
        else:
            length = int.from_bytes(data[offset + 11 : offset + 13], "big")
            end = min(offset + RECORD_HEADER + length, len(data))
        record = data[offset:end]
        offset = end
        if current and len(current) + len(record) > mtu:
            datagrams.append(current)
            current = b""
        current += record
    if current:
        datagrams.append(current)
    return datagrams


def _dtlsContext(method: int) -> Any:
    from OpenSSL import SSL

    context = SSL.Context(method)
    context.set_min_proto_version(DTLS1_2_VERSION)
    context.set_max_proto_version(DTLS1_2_VERSION)
    # Memory BIOs cannot tell OpenSSL the path's MTU: channels set it.
    context.set_options(SSL.OP_NO_QUERY_MTU | SSL.OP_NO_RENEGOTIATION)
    return context


def serverContext(
    privateKey: str, certKey: str | None = None, extraCertChain: str | None = None
) -> Any:
    """
    A DTLS 1.2 server context with a certificate, as Twisted's C{ssl:}
    server endpoint takes them.

    @param privateKey: a PEM file holding the private key (and the
        certificate, when C{certKey} is not given).
    @param certKey: a PEM file holding the certificate.
    @param extraCertChain: a PEM file of intermediate certificates.
    @raise OSError: a file cannot be read.
    @raise ValueError: the files hold no usable key or certificate, or they
        do not match.
    """
    from OpenSSL import SSL

    context = _dtlsContext(SSL.DTLS_SERVER_METHOD)
    try:
        context.use_certificate_file(certKey or privateKey)
        context.use_privatekey_file(privateKey)
        context.check_privatekey()
        if extraCertChain:
            from cryptography import x509
            from OpenSSL.crypto import X509

            with open(extraCertChain, "rb") as chain:
                for certificate in x509.load_pem_x509_certificates(chain.read()):
                    context.add_extra_chain_cert(X509.from_cryptography(certificate))
    except SSL.Error as error:
        reasons = ", ".join(
            reason for _, _, reason in (error.args[0] if error.args else ()) if reason
        )
        raise ValueError(
            f"the key and certificate do not load or do not match ({reasons})"
        ) from None
    return context


def clientContext(trustRoots: bytes | str | None = None) -> Any:
    """
    A DTLS 1.2 client context that checks the server's certificate.

    @param trustRoots: PEM certificates (bytes), or the path of a PEM file,
        to trust; L{None}: the platform's trust store.
    @raise ValueError: C{trustRoots} holds no certificate.
    """
    from OpenSSL import SSL

    context = _dtlsContext(SSL.DTLS_CLIENT_METHOD)
    context.set_verify(SSL.VERIFY_PEER, lambda *args: bool(args[-1]))
    if trustRoots is None:
        context.set_default_verify_paths()
        return context
    if isinstance(trustRoots, str):
        with open(trustRoots, "rb") as roots:
            trustRoots = roots.read()
    from cryptography import x509
    from OpenSSL.crypto import X509

    try:
        certificates = x509.load_pem_x509_certificates(trustRoots)
    except ValueError:
        certificates = []
    if not certificates:
        raise ValueError("the trust roots hold no PEM certificate")
    store = context.get_cert_store()
    for certificate in certificates:
        store.add_cert(X509.from_cryptography(certificate))
    return context


class DtlsChannel:
    """
    One DTLS conversation over memory BIOs: see the module docstring.

    @ivar connection: the pyOpenSSL C{Connection} (memory BIOs).
    @ivar established: the handshake is done.
    @ivar closed: the channel is over (closed here, by the peer, or failed).
    """

    __slots__ = (
        "connection",
        "established",
        "closed",
        "_send",
        "_reactor",
        "_mtu",
        "_received",
        "_onEstablished",
        "_ended",
        "_timer",
    )

    def __init__(
        self,
        connection: Any,
        send: Callable[[bytes], None],
        reactor: Any,
        received: Callable[[bytes], None],
        established: Callable[[], None] | None = None,
        ended: Callable[[str], None] | None = None,
        mtu: int = DEFAULT_MTU,
    ) -> None:
        """
        @param connection: a pyOpenSSL C{Connection} made with no socket
            (memory BIOs), in connect or accept state.
        @param send: sends one datagram to the peer.
        @param received: gets the plaintext of each application record.
        @param established: called once the handshake is done.
        @param ended: called with the reason when the peer ends the
            conversation (close_notify) or it fails; not when L{close} ends
            it.
        """
        self.connection = connection
        self.established = False
        self.closed = False
        self._send = send
        self._reactor = reactor
        self._mtu = mtu
        self._received = received
        self._onEstablished = established
        self._ended = ended
        self._timer: Any = None
        connection.set_ciphertext_mtu(mtu)

    def start(self) -> None:
        """Start the handshake (a client sends its ClientHello)."""
        self._pump()

    def datagramReceived(self, data: bytes) -> None:
        """A datagram from the peer."""
        if self.closed:
            return
        self.connection.bio_write(data)
        self._pump()

    def write(self, data: bytes) -> bool:
        """
        Send C{data} as one application record.

        @return: C{False} when it cannot be sent (the channel is not
            established or is closed, or C{data} is longer than
            L{MAX_PLAINTEXT}).
        """
        from OpenSSL import SSL

        if self.closed or not self.established or len(data) > MAX_PLAINTEXT:
            return False
        try:
            self.connection.send(data)
        except SSL.Error as error:
            self._end(f"DTLS error while sending: {error}")
            return False
        self._flush()
        return True

    def close(self) -> None:
        """End the conversation: a close_notify to the peer, if established."""
        from OpenSSL import SSL

        if self.closed:
            return
        self.closed = True
        self._cancelTimer()
        if self.established:
            try:
                self.connection.shutdown()
            except SSL.Error:
                pass
            self._flush()

    # Internals

    def _pump(self) -> None:
        from OpenSSL import SSL

        connection = self.connection
        try:
            if not self.established:
                try:
                    connection.do_handshake()
                except SSL.WantReadError:
                    self._flush()
                    return
                self.established = True
                if self._onEstablished is not None:
                    self._onEstablished()
                if self.closed:
                    return
            while True:
                try:
                    plaintext = connection.recv(MAX_PLAINTEXT)
                except SSL.WantReadError:
                    break
                self._received(plaintext)
                if self.closed:
                    return
        except SSL.ZeroReturnError:
            self._end("the peer closed the DTLS conversation")
            return
        except SSL.Error as error:
            self._end(f"DTLS error: {error}")
            return
        self._flush()

    def _flush(self) -> None:
        """Send what OpenSSL wrote, and set the retransmission timer."""
        from OpenSSL import SSL

        chunks = []
        while True:
            try:
                chunks.append(self.connection.bio_read(65536))
            except SSL.WantReadError:
                break
        if chunks:
            for datagram in splitRecords(b"".join(chunks), self._mtu):
                self._send(datagram)
        self._arm()

    def _arm(self) -> None:
        self._cancelTimer()
        if self.closed:
            return
        delay = self.connection.DTLSv1_get_timeout()
        if delay is not None:
            self._timer = self._reactor.callLater(delay, self._retransmit)

    def _cancelTimer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _retransmit(self) -> None:
        from OpenSSL import SSL

        self._timer = None
        if self.closed:
            return
        try:
            self.connection.DTLSv1_handle_timeout()
        except SSL.Error as error:
            self._end(f"DTLS error: {error}")
            return
        except Exception:
            log.failure("retransmitting a DTLS flight failed")
            self._end("internal error")
            return
        self._flush()

    def _end(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancelTimer()
        # A fatal alert OpenSSL wrote goes out.
        try:
            self._flush()
        except Exception:
            pass
        if self._ended is not None:
            self._ended(reason)
