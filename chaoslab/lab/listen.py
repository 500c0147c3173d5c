"""Listening sockets the lab's supervisor binds and hands to its children.

Choosing a free port and letting the child bind it later is a race: between the two, any
process on the machine may take the port (an outgoing connection's ephemeral port, another
test's server), and the child dies with EADDRINUSE. So the supervisor binds and listens
itself and passes the socket (``--listen-fd``); the child serves on it and the supervisor
closes its copy, so a dead child's port refuses connections as a dead server's does.
"""

from __future__ import annotations

import socket
from typing import Any

BACKLOG = 1024


def bound_listener(port: int = 0, host: str = "127.0.0.1") -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def server_address(host: str, port: int, listen_fd: int | None) -> dict[str, Any]:
    """Keyword arguments for ``loop.create_server``: the inherited socket, or host/port."""
    if listen_fd is not None:
        return {"sock": socket.socket(fileno=listen_fd)}
    return {"host": host, "port": port, "reuse_address": True, "backlog": BACKLOG}
