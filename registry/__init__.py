"""The registry: models, versions, aliases, cache generations, history and API tokens in SQL."""

from registry.artifacts import ArtifactStore, LocalArtifactStore, StoredArtifact
from registry.entities import (
    PRODUCTION, BatchPolicy, CachePolicy, HistoryRecord, LiveState, ModelRecord, ProductionChange, TokenRecord,
    VersionRecord,
)
from registry.errors import Conflict, Invalid, NotFound, RegistryError, SchemaOutOfDate, TooLarge
from registry.service import RegistryService, Validated, Validator
from registry.tables import SQL_INT_MAX
from registry.tokens import ROLES, TokenService

__all__ = [
    "PRODUCTION", "ArtifactStore", "BatchPolicy", "CachePolicy", "Conflict", "HistoryRecord", "Invalid",
    "LiveState", "LocalArtifactStore", "ModelRecord", "NotFound", "ProductionChange", "RegistryError",
    "ROLES", "RegistryService", "SQL_INT_MAX", "SchemaOutOfDate", "StoredArtifact", "TokenRecord", "TokenService",
    "TooLarge", "Validated", "Validator", "VersionRecord",
]
