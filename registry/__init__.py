"""The registry: models, versions, aliases, cache generations and history in SQL."""

from registry.artifacts import ArtifactStore, LocalArtifactStore, StoredArtifact
from registry.entities import (
    PRODUCTION, BatchPolicy, CachePolicy, HistoryRecord, LiveState, ModelRecord, ProductionChange, VersionRecord,
)
from registry.errors import Conflict, Invalid, NotFound, RegistryError, SchemaOutOfDate, TooLarge
from registry.service import RegistryService, Validated, Validator

__all__ = [
    "PRODUCTION", "ArtifactStore", "BatchPolicy", "CachePolicy", "Conflict", "HistoryRecord", "Invalid",
    "LiveState", "LocalArtifactStore", "ModelRecord", "NotFound", "ProductionChange", "RegistryError",
    "RegistryService", "SchemaOutOfDate", "StoredArtifact", "TooLarge", "Validated", "Validator", "VersionRecord",
]
