"""What the engine says about a model without running it: its metadata and whether it can serve here.

Decided from the registry (versions, runtime, recorded signatures) and what this replica has
loaded; the V2 routes only translate these dataclasses into the protocol's JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

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
