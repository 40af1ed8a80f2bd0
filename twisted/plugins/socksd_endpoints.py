"""
socksd's client endpoint strings for C{clientFromString}: C{socks5:} and
C{socks4a:} and C{socks6:} (see L{socksd.client.parser} for the syntax).

There is deliberately no C{__init__.py} in C{twisted/plugins/}: this file
joins Twisted's own plugin namespace package.
"""

from socksd.client.parser import (
    SOCKS4AEndpointParser,
    SOCKS5EndpointParser,
    SOCKS6EndpointParser,
)

socks5EndpointParser = SOCKS5EndpointParser()
socks4aEndpointParser = SOCKS4AEndpointParser()
socks6EndpointParser = SOCKS6EndpointParser()
