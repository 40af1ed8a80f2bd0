"""
Tests for L{socksd.replies}: every failure maps to a code its profile allows.
"""

from __future__ import annotations

import errno

from twisted.internet import defer, error
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from socksd import errors as E
from socksd.replies import (
    Prop229Reply,
    ReplyProfile,
    Socks4Reply,
    Socks5Reply,
    Socks6Reply,
    TorExtendedReply,
    errorForReply,
    replyFor,
    successFor,
)

ALL_ERRORS = [getattr(E, name) for name in E.__all__]


class ReplyForTests(SynchronousTestCase):
    """
    L{replyFor} picks the code that reports a failure in a profile.
    """

    def test_twistedErrors(self) -> None:
        """
        Twisted's connection errors map to the RFC 1928 codes.
        """
        cases = [
            (error.ConnectionRefusedError(), Socks5Reply.CONNECTION_REFUSED),
            (error.DNSLookupError(), Socks5Reply.HOST_UNREACHABLE),
            (error.TimeoutError(), Socks5Reply.TTL_EXPIRED),
            (error.TCPTimedOutError(), Socks5Reply.TTL_EXPIRED),
            (error.NoRouteError(), Socks5Reply.HOST_UNREACHABLE),
            (defer.CancelledError(), Socks5Reply.TTL_EXPIRED),
            (error.ConnectError(osError=errno.ENETUNREACH), Socks5Reply.NETWORK_UNREACHABLE),
            (OSError(errno.EHOSTUNREACH, "no"), Socks5Reply.HOST_UNREACHABLE),
            (ConnectionRefusedError(), Socks5Reply.CONNECTION_REFUSED),
            (RuntimeError("bug"), Socks5Reply.GENERAL_FAILURE),
        ]
        for failure, code in cases:
            self.assertEqual(replyFor(failure, ReplyProfile.SOCKS5), code, failure)

    def test_failureWrapper(self) -> None:
        """
        A Twisted C{Failure} is looked through to the exception it wraps.
        """
        failure = Failure(error.ConnectionRefusedError())
        self.assertEqual(
            replyFor(failure, ReplyProfile.SOCKS5), Socks5Reply.CONNECTION_REFUSED
        )

    def test_socks4RejectsEverything(self) -> None:
        """
        SOCKS4 has one failure code for everything but its identd cases.
        """
        self.assertEqual(
            replyFor(error.ConnectionRefusedError(), ReplyProfile.SOCKS4),
            Socks4Reply.REJECTED,
        )
        self.assertEqual(
            replyFor(E.NotAllowed(), ReplyProfile.SOCKS4), Socks4Reply.REJECTED
        )
        self.assertEqual(
            replyFor(E.UserIdMismatch(), ReplyProfile.SOCKS4),
            Socks4Reply.USERID_MISMATCH,
        )

    def test_onionCodesNeedTheFlag(self) -> None:
        """
        Onion-service failures get F0-F7 only in the extended profile, and
        the best RFC code (host unreachable) otherwise.
        """
        self.assertEqual(
            replyFor(E.OnionInvalidAddress(), ReplyProfile.SOCKS5_EXTENDED),
            TorExtendedReply.ONION_INVALID_ADDRESS,
        )
        self.assertEqual(
            replyFor(E.OnionInvalidAddress(), ReplyProfile.SOCKS5),
            Socks5Reply.HOST_UNREACHABLE,
        )

    def test_prop229MeaningsOfF0(self) -> None:
        """
        F0 means a pluggable-transport failure to a proposal 229 client and
        a missing onion descriptor to an extended-errors client; neither
        profile sends the other's meaning.
        """
        self.assertEqual(
            replyFor(E.TransportTemporaryFailure(), ReplyProfile.SOCKS5_PROP229), 0xF0
        )
        self.assertEqual(
            replyFor(E.OnionDescriptorNotFound(), ReplyProfile.SOCKS5_EXTENDED), 0xF0
        )
        self.assertEqual(
            replyFor(E.OnionDescriptorNotFound(), ReplyProfile.SOCKS5_PROP229),
            Prop229Reply.HIDDEN_SERVICE_NOT_FOUND,
        )
        self.assertEqual(
            replyFor(E.OnionRendezvousFailed(), ReplyProfile.SOCKS5_PROP229),
            Prop229Reply.HIDDEN_SERVICE_NOT_REACHABLE,
        )
        self.assertEqual(
            replyFor(E.TransportTemporaryFailure(), ReplyProfile.SOCKS5_EXTENDED),
            Socks5Reply.GENERAL_FAILURE,
        )

    def test_socks6Timeout(self) -> None:
        """
        SOCKS6 has its own code for a connect timeout.
        """
        self.assertEqual(
            replyFor(error.TimeoutError(), ReplyProfile.SOCKS6), Socks6Reply.TIMEOUT
        )

    def test_everyErrorInEveryProfile(self) -> None:
        """
        Every typed error maps, in every profile, to a failure code of that
        profile's tables and never to success.
        """
        allowed = {
            ReplyProfile.SOCKS4: set(Socks4Reply),
            ReplyProfile.SOCKS5: set(Socks5Reply),
            ReplyProfile.SOCKS5_EXTENDED: set(Socks5Reply) | set(TorExtendedReply),
            ReplyProfile.SOCKS5_PROP229: set(Socks5Reply) | set(Prop229Reply),
            ReplyProfile.SOCKS6: set(Socks6Reply),
        }
        for profile, codes in allowed.items():
            for cls in ALL_ERRORS:
                code = replyFor(cls(), profile)
                self.assertIn(code, codes, (cls, profile))
                self.assertNotEqual(code, successFor(profile), (cls, profile))


class ErrorForReplyTests(SynchronousTestCase):
    """
    L{errorForReply} turns a proxy's code back into a typed error.
    """

    def test_roundTrip(self) -> None:
        """
        Every failure code of every profile gives an error that maps back to
        the same code, carrying the raw code.
        """
        tables = {
            ReplyProfile.SOCKS5: Socks5Reply,
            ReplyProfile.SOCKS6: Socks6Reply,
            ReplyProfile.SOCKS5_EXTENDED: TorExtendedReply,
            ReplyProfile.SOCKS5_PROP229: Prop229Reply,
        }
        for profile, table in tables.items():
            for code in table:
                if code == 0:
                    continue
                failure = errorForReply(code, profile)
                self.assertEqual(failure.replyCode, code)
                self.assertEqual(replyFor(failure, profile), code, (profile, code))

    def test_unknownCode(self) -> None:
        """
        A code no table knows is a general failure that keeps the raw code.
        """
        failure = errorForReply(0x42, ReplyProfile.SOCKS5)
        self.assertIsInstance(failure, E.GeneralFailure)
        self.assertEqual(failure.replyCode, 0x42)
