"""The registry: models, versions, aliases, releases, cache generations, history and API tokens in SQL."""

from modelreg.registry.artifacts import ArtifactStore, LocalArtifactStore, StoredArtifact
from modelreg.registry.entities import (
    PRODUCTION,
    BatchPolicy,
    CachePolicy,
    Guard,
    GuardSpec,
    HistoryRecord,
    LiveState,
    ModelRecord,
    ProductionChange,
    ReleaseState,
    ShadowSetting,
    TokenRecord,
    TrafficSplit,
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
    "Guard",
    "GuardSpec",
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
    "ReleaseState",
    "SchemaOutOfDate",
    "ShadowSetting",
    "StoredArtifact",
    "TokenRecord",
    "TokenService",
    "TooLarge",
    "TrafficSplit",
    "Unavailable",
    "Validated",
    "Validator",
    "VersionRecord",
    "open_registry",
]
