"""What the engine says without running a model: a model's metadata, whether it can serve here, and
whether this replica can serve at all (the probes).

Decided from the registry (versions, runtime, recorded signatures) and what this replica has
loaded; the V2 and operations routes only translate these dataclasses into their JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from modelreg.plugins.base import Signature
from modelreg.plugins.discovery import PluginSet
from modelreg.registry import ModelRecord, NoProductionVersion, NotFound, RegistryService, VersionRecord


@dataclass(frozen=True)
class ModelMetadata:
    """One version described: the model's runtime, the versions that can serve, the signature."""

    name: str
    version: int
    platform: str
    ready_versions: tuple[int, ...]
    signature: Signature


@dataclass(frozen=True)
class Readiness:
    """Whether a version is loaded here or can be; ``reason`` says why not, for the client."""

    name: str
    ready: bool
    reason: str | None = None


ServerStatus = Literal["ready", "degraded", "starting", "shutting down"]


@dataclass(frozen=True)
class ServerReadiness:
    """Whether this replica can serve its production versions (/readyz, /v2/health/ready).

    Ready once the first load pass has finished and until shutdown begins. A production version
    that failed to load here, or the registry database being down, makes it ``degraded``: still
    ready, because loaded models keep serving and taking every replica out of the load balancer
    for a shared fault would stop them too. ``checks`` says what is degraded and why.
    """

    status: ServerStatus
    checks: Mapping[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.status in ("ready", "degraded")

    def __bool__(self) -> bool:  # ``if serving.server_ready():`` reads as it should
        return self.ready


class Catalog:
    """Blocking registry reads behind the engine's metadata and readiness (run them in a thread)."""

    def __init__(self, registry: RegistryService, plugins: PluginSet) -> None:
        self._registry = registry
        self._plugins = plugins

    def lookup(self, name: str, version: int | None) -> tuple[ModelRecord, list[VersionRecord], VersionRecord]:
        """The model, its versions, and the asked-for (else production) version: one blocking read."""
        model = self._registry.get_model(name)
        versions = self._registry.list_versions(name)
        number = version if version is not None else model.production
        if number is None:
            raise NoProductionVersion(name)
        for record in versions:
            if record.version == number:
                return model, versions, record
        raise NotFound("version", name, number)

    def readiness(self, name: str, version: int | None) -> Readiness:
        """Whether the version, not loaded here yet, could be: it passed validation and its runtime is here."""
        model, _, record = self.lookup(name, version)
        if record.status != "ready":
            return Readiness(name, False, f"version {record.version} of {name!r} failed validation and "
                                          f"cannot serve: {record.error}")
        if model.runtime not in self._plugins:
            return Readiness(name, False, f"runtime {model.runtime!r} of {name!r} is not available on this server")
        return Readiness(name, True)
