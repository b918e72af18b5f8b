"""Open the registry at a URL: engine, optional migration, schema check, sessions and the services on them.

The one place that sequence is written; the server's wiring, ``modelreg tokens --local`` and the
``modelreg db`` commands all open the registry through ``open_registry``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from modelreg.registry.artifacts import ArtifactStore
from modelreg.registry.db import make_engine, make_sessions
from modelreg.registry.service import RegistryService, Validator
from modelreg.registry.tokens import TokenService

DEFAULT_MAX_ARTIFACT_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class OpenRegistry:
    """An opened registry database; ``close()`` (or leaving a ``with`` block) disposes of its engine."""

    engine: Engine
    sessions: sessionmaker[Session]
    tokens: TokenService
    _registry: RegistryService | None = None

    @property
    def registry(self) -> RegistryService:
        """The RegistryService; only there when ``open_registry`` was given an artifact store."""
        if self._registry is None:
            raise RuntimeError("this registry was opened without an artifact store: pass artifacts= to open_registry")
        return self._registry

    def close(self) -> None:
        """Dispose of the engine's pooled connections."""
        self.engine.dispose()

    def __enter__(self) -> OpenRegistry:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_registry(url: str, *, artifacts: ArtifactStore | None = None, validator: Validator | None = None,
                  max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES, migrate: bool = False,
                  check_schema: bool = True) -> OpenRegistry:
    """Open the registry at ``url``: upgrade it first when ``migrate``, then refuse an out-of-date schema.

    Raises SchemaOutOfDate (saying to run ``modelreg db upgrade``) unless ``check_schema`` is False,
    which only the schema commands themselves want.
    """
    from modelreg.registry import schema  # Alembic costs ~120 ms to import; only opening needs it

    if migrate:
        schema.upgrade(url)  # Alembic opens and closes its own connection
    engine = make_engine(url)
    try:
        if check_schema:
            schema.ensure_current(engine, url)
        sessions = make_sessions(engine)
        registry = None if artifacts is None else RegistryService(sessions, artifacts, validator, max_artifact_bytes)
        return OpenRegistry(engine=engine, sessions=sessions, tokens=TokenService(sessions), _registry=registry)
    except BaseException:
        engine.dispose()
        raise
