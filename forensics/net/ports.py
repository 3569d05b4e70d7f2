"""Zeek's ``likely_server_ports``: ports that mark the responder of a connection.

Zeek flips a new connection's originator and responder when its first packet
comes *from* one of these ports (TCP not starting with a pure SYN, and UDP).
The set is the union of the ports Zeek's default scripts register for their
analyzers (DNS, HTTP, SSL, tunnels, DHCP, SMTP, SNMP, DCE-RPC, NTP verified
against Zeek's scripts; the rest from its analyzers' ``ports`` constants).
"""

from __future__ import annotations

import numpy as np

__all__ = ["DNS_UDP_PORTS", "LIKELY_TCP", "LIKELY_UDP", "TCP_SERVER_PORTS", "UDP_SERVER_PORTS"]

TCP_SERVER_PORTS = frozenset({
    21, 22, 23, 25, 53, 80, 81, 88, 110, 135, 139, 143, 389, 443, 445, 502, 563, 585, 587,
    614, 631, 636, 989, 990, 992, 993, 995, 1080, 1883, 2811, 3128, 3268, 3306, 3389, 5222,
    5223, 5269, 5432, 6379, 6666, 6667, 6668, 6669, 8000, 8080, 8888, 20000,
})
UDP_SERVER_PORTS = frozenset({
    53, 67, 69, 88, 123, 137, 161, 162, 443, 514, 1812, 2123, 2152, 3544, 4789, 5060, 5072,
    5353, 5355, 6081, 20000,
})


# UDP ports Zeek's DNS analyzer is registered for (base/protocols/dns: 53, 137, 5353,
# 5355). On these responder ports the analyzer's ExpireTimer ends a connection
# after dns_session_timeout (10 s) of silence, well before udp_inactivity_timeout.
DNS_UDP_PORTS = frozenset({53, 137, 5353, 5355})


def _mask(ports: frozenset[int], dns: frozenset[int] = frozenset()) -> np.ndarray:
    # Bit 0: likely server port. Bit 1: DNS analyzer port (see _flows.DNS_PORT).
    m = np.zeros(65536, np.uint8)
    m[list(ports)] |= 1
    m[list(dns)] |= 2
    return m


LIKELY_TCP = _mask(TCP_SERVER_PORTS)
LIKELY_UDP = _mask(UDP_SERVER_PORTS, DNS_UDP_PORTS)
