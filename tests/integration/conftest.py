"""Fixtures the integration tests share: the fault proxy server and an echo service
(defined with their helpers in ``tests/integration/proxykit.py``)."""

from tests.integration.proxykit import echo_port, proxy, proxy_api

__all__ = ["echo_port", "proxy", "proxy_api"]
