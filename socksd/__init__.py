"""
socksd: a SOCKS4/4A/5/6 server and client for Twisted.

The server is L{socksd.server.SocksServerFactory} (configured with
L{socksd.server.ServerConfig}); test doubles for applications that embed it
are in L{socksd.testing}.  This package imports nothing itself, so that
C{import socksd} stays cheap.
"""

__version__ = "0.1.0"
