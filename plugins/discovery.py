"""Find runtime plugins through entry points; a plugin that cannot start becomes a status."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from modelreg.plugins.base import ENTRY_POINT_GROUP, PluginError, Runtime

log = logging.getLogger(__name__)

AVAILABLE = "available"


@dataclass(frozen=True)
class PluginStatus:
    """One installed plugin: where it comes from, what it offers, and whether it can run."""

    name: str
    status: str
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None
    formats: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    runtime: Runtime | None = field(default=None, compare=False, repr=False)

    @property
    def available(self) -> bool:
        """True when the runtime was built and can load artifacts."""
        return self.runtime is not None

    @property
    def reason(self) -> str:
        """Why the plugin is unavailable ("" when it is available)."""
        return self.status.removeprefix("unavailable: ") if self.runtime is None else ""

    def to_dict(self) -> dict[str, Any]:
        """The status as the admin API shows it."""
        return {
            "name": self.name,
            "status": self.status,
            "available": self.available,
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.entry_point,
            "formats": list(self.formats),
            "devices": list(self.devices),
        }


def discover(allow: Collection[str] | None = None) -> list[PluginStatus]:
    """Every installed runtime plugin (only those named in ``allow`` when given), with its status."""
    statuses: dict[str, PluginStatus] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if allow is not None and ep.name not in allow:
            continue
        if ep.name in statuses:
            # First on sys.path wins, as imports do; the other is shown, never silently dropped.
            taken = statuses[ep.name]
            log.warning("runtime plugin %r from %s ignored: %s already provides it",
                        ep.name, _dist(ep)[0], taken.distribution)
            key = f"{ep.name} ({_dist(ep)[0]})"
            statuses[key] = _unavailable(ep, f"another plugin named {ep.name!r} is installed "
                                             f"(from {taken.distribution}) and is used instead")
            continue
        statuses[ep.name] = _status(ep)
    for name in sorted(set(allow or ()) - {s.name for s in statuses.values()}):
        statuses[name] = PluginStatus(name=name, status="unavailable: allowed, but no installed plugin has this name")
    return list(statuses.values())


class PluginSet:
    """The runtimes this process may use, by name."""

    def __init__(self, statuses: Iterable[PluginStatus]) -> None:
        self._statuses = list(statuses)
        self._by_name: dict[str, PluginStatus] = {}
        for status in self._statuses:
            self._by_name.setdefault(status.name, status)

    @classmethod
    def discover(cls, allow: Collection[str] | None = None) -> PluginSet:
        """Discover the installed plugins (see ``discover``)."""
        return cls(discover(allow))

    def statuses(self) -> list[PluginStatus]:
        """Every plugin found, available or not, in discovery order."""
        return list(self._statuses)

    def available(self) -> list[str]:
        """Names of the runtimes that can be used, sorted."""
        return sorted(s.name for s in self._statuses if s.available)

    def get(self, name: str) -> Runtime:
        """The runtime called ``name``, or a PluginError that says why not and what there is."""
        status = self._by_name.get(name)
        if status is not None and status.runtime is not None:
            return status.runtime
        reason = status.reason if status is not None else "no plugin of that name is installed and allowed"
        raise PluginError(
            f"runtime {name!r} is not installed or not available: {reason}; "
            f"available: {', '.join(self.available()) or 'none'}"
        )

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.available()


def _status(ep: EntryPoint) -> PluginStatus:
    try:
        runtime = ep.load()()
        declared = getattr(runtime, "name", None)
        if declared != ep.name:
            return _unavailable(ep, f"its runtime calls itself {declared!r}, but the entry point is {ep.name!r}")
        formats = tuple(sorted(runtime.formats))
        devices = tuple(runtime.devices())
    except Exception as exc:  # a broken third-party plugin must not stop the server
        log.warning("runtime plugin %r is unavailable: %s", ep.name, _why(exc))
        log.debug("runtime plugin %r failed to start", ep.name, exc_info=True)
        return _unavailable(ep, _why(exc))
    distribution, version = _dist(ep)
    return PluginStatus(name=ep.name, status=AVAILABLE, distribution=distribution, version=version,
                        entry_point=ep.value, formats=formats, devices=devices, runtime=runtime)


def _unavailable(ep: EntryPoint, reason: str) -> PluginStatus:
    distribution, version = _dist(ep)
    return PluginStatus(name=ep.name, status=f"unavailable: {reason}", distribution=distribution,
                        version=version, entry_point=ep.value)


def _dist(ep: EntryPoint) -> tuple[str | None, str | None]:
    dist = ep.dist
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _why(exc: BaseException) -> str:
    if isinstance(exc, PluginError):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return f"{exc.name.split('.')[0]} is not installed"
    return f"{type(exc).__name__}: {exc}"
