"""The address guard: a download never connects to a private, loopback, link-local, multicast,
reserved or unspecified address (IPv4-mapped IPv6 forms included) unless the configuration
allows it (``allow_private_addresses``, or a network listed in ``allowed_networks``).

It lives in urllib3's connection (``_new_conn``), so it checks every connection a session opens:
the first one and each redirect hop's. The host is resolved, every address it resolves to is
checked, and the socket goes to the checked address, never to a second lookup that DNS
rebinding could change. TLS still verifies the certificate for the host name.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError


class BlockedAddress(Exception):
    """Deliberately not an OSError: urllib3 retries those, and a refused address stays refused."""


def blocked(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified


class AddressGuard:
    def __init__(self, allow_private: bool = False, allowed_networks: Iterable[str] = ()) -> None:
        self.allow_private = allow_private
        self.exempt = [ipaddress.ip_network(network, strict=False) for network in allowed_networks]

    def address(self, host: str, port: int, connection: Any = None) -> str:
        """The address to connect to, after checking every address ``host`` resolves to."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise NameResolutionError(host, connection, error) from None
        addresses = [info[4][0] for info in infos]
        if not self.allow_private:
            refused = [a for a in addresses if blocked(a) and not any(ipaddress.ip_address(a) in net for net in self.exempt)]
            if refused:
                raise BlockedAddress(f"{host} resolves to {refused[0]}")
        return addresses[0]

    def pool_classes(self) -> dict[str, type]:
        """urllib3 connection pools whose connections pass through this guard."""
        plain = type("GuardedHTTPConnection", (_Guarded, HTTPConnection), {"guard": self})
        tls = type("GuardedHTTPSConnection", (_Guarded, HTTPSConnection), {"guard": self})
        return {
            "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": plain}),
            "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": tls}),
        }


class _Guarded:
    guard: AddressGuard
    _dns_host: str
    port: int

    def _new_conn(self) -> socket.socket:
        name = self._dns_host
        self._dns_host = self.guard.address(name, self.port, self)  # connect to what was checked
        try:
            return super()._new_conn()  # type: ignore[misc]
        finally:
            self._dns_host = name
