"""
Whether this Python can speak TLS through Twisted: pyOpenSSL and
cryptography are installed. On PyPy they often are not (cryptography has
no PyPy wheel for every PyPy and needs Rust to build), so the tests that
need them skip with L{NO_TLS} as their reason.
"""

from __future__ import annotations

try:
    import cryptography  # noqa: F401
    from twisted.internet import ssl  # noqa: F401
except ImportError as error:
    #: Why TLS tests skip here, or L{None} where they run.
    NO_TLS: str | None = f"TLS needs pyOpenSSL and cryptography: {error}"
else:
    NO_TLS = None
