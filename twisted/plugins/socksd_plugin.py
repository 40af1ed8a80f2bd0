"""
The C{twistd socksd} plugin.

There is deliberately no C{__init__.py} in C{twisted/plugins/}: this file
joins Twisted's own plugin namespace package.
"""

from twisted.application.service import ServiceMaker

socksd = ServiceMaker(
    "socksd",
    "socksd.tap",
    "A SOCKS4/4A/5/6 proxy server with Tor's SOCKS extensions.",
    "socksd",
)
