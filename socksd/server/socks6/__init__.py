"""
The server's SOCKS6 (draft-11) pieces that need the reactor: the session
table (L{socksd.server.socks6.sessions}), stack options on sockets
(L{socksd.server.socks6.stack}), the DNS service
(L{socksd.server.socks6.dns}), UDP associations
(L{socksd.server.socks6.udp}) and their ICMP errors
(L{socksd.server.socks6.udperror}).  The handshake itself is sans-IO:
L{socksd.handshake.socks6}.
"""
