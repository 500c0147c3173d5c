"""``python -m chaoslab.drivers.proxy --api 127.0.0.1:8474 [--config proxies.json]``

Runs the proxy server until SIGTERM/SIGINT. With ``--api HOST:0`` the OS picks the
port; ``--api [::1]:8474`` serves the API over IPv6. Once the API accepts requests,
one line is printed on stdout::

    chaoslab-proxy api=127.0.0.1:PORT pid=PID

``--config`` takes a JSON array of proxies, as Toxiproxy's ``-config`` and ``/populate``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from chaoslab.drivers.proxy.api import ApiServer
from chaoslab.drivers.proxy.errors import ApiError
from chaoslab.drivers.proxy.server import ProxyServer, join_address, split_address


async def serve(host: str, port: int, config: list[object] | None = None) -> None:
    """Serve until SIGTERM or SIGINT; prints the ready line once the API listens."""
    loop = asyncio.get_running_loop()
    proxies = ProxyServer(loop)
    if config is not None:
        await proxies.populate(config)
    api = ApiServer(proxies, host, port)
    api.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    api_host, api_port = api.address
    sys.stdout.write(f"chaoslab-proxy api={join_address(api_host, api_port)} pid={os.getpid()}\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await asyncio.to_thread(api.stop)
        await proxies.close()


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("chaoslab-proxy: --loop uvloop, but uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chaoslab.drivers.proxy",
        description="TCP fault proxy speaking Toxiproxy's HTTP API.",
    )
    parser.add_argument("--api", default="127.0.0.1:8474", help="HOST:PORT of the HTTP API")
    parser.add_argument("--config", type=Path, help="JSON array of proxies to create")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop: uvloop (C, libuv) or the stdlib's; auto = uvloop if installed",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        host, port = split_address(args.api, what="--api")
        config = json.loads(args.config.read_text("utf-8")) if args.config else None
        asyncio.run(serve(host, port, config), loop_factory=_loop_factory(args.loop))
    except (ApiError, OSError, ValueError) as exc:
        sys.stderr.write(f"chaoslab-proxy: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
