"""The one error of the proxy server's API, shared by the toxic parsers and the server."""

from __future__ import annotations


class ApiError(Exception):
    """An API request cannot be honoured; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)
