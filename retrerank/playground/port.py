"""The playground's address, claimed before the model loads: a port that is taken or out of range, or a host
that is not this machine's, is one line (a ConfigError naming it) at once, not a server traceback after the
model and index are built.

    port = claim_port(host, number)   # bound, so that nothing takes it while the model loads
    ...                               # load the run, index its split
    port.close()                      # then the server binds it again at once
"""

from __future__ import annotations

import errno
import socket

from retrerank.config import ConfigError


def claim_port(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port); close it just before the server binds the same address."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: a port is a number from 0 to 65535 (default: 8000)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise ConfigError(f"--host {host}: not an address this machine can listen on ({err})") from None
    claimed = socket.socket(family, kind, proto)
    claimed.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: only a live listener clashes
    try:
        claimed.bind(address)
    except OSError as err:
        claimed.close()
        if err.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"--port {port}: {host}:{port} is already in use by another program; pick another --port"
            ) from None
        if err.errno == errno.EACCES:
            raise ConfigError(f"--port {port}: not allowed here (ports below 1024 need privileges)") from None
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({err.strerror})") from None
    return claimed
