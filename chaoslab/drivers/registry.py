"""Finds installed drivers through the ``chaoslab.drivers`` entry-point group.

Drivers are registered by entry point only, never discovered by package-name prefix.
A registry is an object (no module-level cache) so two runs in one process, or a test
that adds a fake driver, never see each other's drivers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from chaoslab.drivers.base import Driver
from chaoslab.errors import DriverError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

GROUP = "chaoslab.drivers"


class DriverRegistry:
    def __init__(self, *, extra: dict[str, Driver] | None = None, load_installed: bool = True):
        self._drivers: dict[str, Driver] = dict(extra or {})
        self._load_installed = load_installed
        self._eps: dict[str, EntryPoint] | None = None

    @property
    def _entry_points(self) -> dict[str, EntryPoint]:
        # Scanned on first use: a run with no driver activity never pays for it.
        if self._eps is None:
            from importlib.metadata import entry_points  # ~20 ms: only when a driver is needed

            self._eps = {ep.name: ep for ep in entry_points(group=GROUP)} if self._load_installed else {}
        return self._eps

    def add(self, driver: Driver) -> None:
        self._drivers[driver.name] = driver

    def names(self) -> list[str]:
        return sorted(set(self._drivers) | set(self._entry_points))

    def get(self, name: str) -> Driver:
        if name in self._drivers:
            return self._drivers[name]
        ep = self._entry_points.get(name)
        if ep is None:
            raise DriverError(f"no driver named {name!r} is installed (known: {', '.join(self.names())})")
        try:
            factory = ep.load()
        except ImportError as exc:
            raise DriverError(f"driver {name!r} cannot be loaded: {exc}", driver=name) from exc
        driver = factory()
        if not isinstance(driver, Driver):
            raise DriverError(f"entry point {name!r} did not produce a Driver", driver=name)
        self._drivers[name] = driver
        return driver

    def loaded(self) -> list[Driver]:
        """The drivers this registry has instantiated so far (the ones a run used)."""
        return list(self._drivers.values())

    def __contains__(self, name: str) -> bool:
        return name in self._drivers or name in self._entry_points

    def __iter__(self) -> Iterator[Driver]:
        for name in self.names():
            yield self.get(name)
