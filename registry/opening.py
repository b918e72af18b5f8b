"""Open the registry at a URL: engine, optional migration, schema check, sessions and the services on them.

The one place that sequence is written; the server's wiring, ``modelreg tokens --local`` and the
``modelreg db`` commands all open the registry through ``open_registry``; ``open_artifacts`` opens the
artifact store a URL names (a folder, or an S3-compatible bucket).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlparse

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from modelreg.registry.artifacts import ArtifactStore, ArtifactStoreMisconfigured, LocalArtifactStore
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


def open_artifacts(url: str, *, cache_dir: Path, cache_bytes: int, max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES,
                   create_bucket: bool = False, environ: Mapping[str, str] = os.environ) -> ArtifactStore:
    """The artifact store at ``url``: a folder path or ``file://`` URL (the default), or ``s3://bucket/prefix``.

    S3 takes the standard ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and
    ``AWS_REGION`` from ``environ`` and keeps up to ``cache_bytes`` of fetched artifacts under
    ``cache_dir``. The store is checked before it is returned: a missing bucket or refused credentials
    raise ArtifactStoreMisconfigured naming the setting to fix (``create_bucket`` makes the bucket instead).
    """
    scheme = urlparse(url).scheme
    store: ArtifactStore
    if scheme == "s3":
        from modelreg.registry.artifact_cache import ArtifactCache
        from modelreg.registry.s3_store import S3ArtifactStore, S3Location, S3Settings  # boto3 only when used

        store = S3ArtifactStore(S3Location.parse(url), S3Settings.from_environment(environ).client(),
                                ArtifactCache(cache_dir, cache_bytes), max_bytes=max_artifact_bytes,
                                create_bucket=create_bucket)
    elif scheme == "file":
        store = LocalArtifactStore(Path(urlparse(url).path))
    elif scheme == "" or len(scheme) == 1:  # a plain path (or a Windows drive letter)
        store = LocalArtifactStore(Path(url))
    else:
        raise ArtifactStoreMisconfigured(f"MODELREG_ARTIFACT_URL {url!r} is not a folder, file:///path or "
                                         "s3://bucket/prefix")
    store.check()
    return store
