"""socksd: a SOCKS4/4A/5/6 server and client for Twisted."""

__version__ = "0.1.0"
