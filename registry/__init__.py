"""The registry: models, versions, aliases, cache generations, history and API tokens in SQL."""

from modelreg.registry.artifacts import ArtifactStore, LocalArtifactStore, StoredArtifact
from modelreg.registry.entities import (
    PRODUCTION,
    BatchPolicy,
    CachePolicy,
    HistoryRecord,
    LiveState,
    ModelRecord,
    ProductionChange,
    TokenRecord,
    VersionRecord,
)
from modelreg.registry.errors import (
    Conflict,
    Invalid,
    NoProductionVersion,
    NotFound,
    RegistryError,
    SchemaOutOfDate,
    TooLarge,
    Unavailable,
)
from modelreg.registry.opening import OpenRegistry, open_registry
from modelreg.registry.service import RegistryService, Validated, Validator
from modelreg.registry.tables import SQL_INT_MAX
from modelreg.registry.tokens import ROLES, TokenService

__all__ = [
    "PRODUCTION",
    "ROLES",
    "SQL_INT_MAX",
    "ArtifactStore",
    "BatchPolicy",
    "CachePolicy",
    "Conflict",
    "HistoryRecord",
    "Invalid",
    "LiveState",
    "LocalArtifactStore",
    "ModelRecord",
    "NoProductionVersion",
    "NotFound",
    "OpenRegistry",
    "ProductionChange",
    "RegistryError",
    "RegistryService",
    "SchemaOutOfDate",
    "StoredArtifact",
    "TokenRecord",
    "TokenService",
    "TooLarge",
    "Unavailable",
    "Validated",
    "Validator",
    "VersionRecord",
    "open_registry",
]
