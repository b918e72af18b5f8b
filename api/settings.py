"""Settings: every knob of a replica, read from ``MODELREG_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelreg.registry.db import embedded_url


class Settings(BaseSettings):
    """One replica's configuration; built in ``create_app`` or the CLI, never at import time."""

    model_config = SettingsConfigDict(env_prefix="MODELREG_", extra="ignore")

    data_dir: Path = Path("data")
    """Folder for the embedded default: the SQLite file, artifacts and the generated admin token."""

    database_url: str | None = None
    """SQLAlchemy URL of the registry; default: a SQLite file under ``data_dir``."""

    redis_url: str | None = None
    """Redis for the prediction cache and change events; default: none, an in-process cache. One server
    (``redis://``, ``rediss://``), Sentinel (``redis+sentinel://h1:26379,h2:26379/mymaster``) or Cluster
    (``redis+cluster://h1:7000,h2:7001``): ``serving/redis_url.py``."""

    artifact_dir: Path | None = None
    """Where artifacts are stored by sha256; default: ``data_dir/artifacts``."""

    artifact_url: str | None = None
    """The artifact store: a folder path or ``file:///path`` (default: ``artifact_dir``), or
    ``s3://bucket/prefix`` on any S3-compatible store, with the standard ``AWS_ENDPOINT_URL``,
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_REGION`` (needs ``modelreg[s3]``)."""

    artifact_cache_dir: Path | None = None
    """With an S3 store: where this replica keeps the artifacts it fetched; default ``data_dir/artifact-cache``."""

    artifact_cache_bytes: int = Field(default=4 * 1024**3, ge=0)
    """With an S3 store: the local cache's budget; past it the least recently used files are removed
    (a loaded model keeps its bytes in memory; the file is fetched again for its next load)."""

    artifact_create_bucket: bool = False
    """With an S3 store: create the bucket at start when it does not exist (default: refuse to start)."""

    admin_token: SecretStr | None = None
    """The bootstrap admin token (acts as "bootstrap"); unset: generated into ``data_dir/admin-token`` for
    the embedded default, none with a shared database (use ``modelreg tokens create --local``)."""

    predict_auth: bool = False
    """Require a bearer token (any role) on the predict routes; default: they are open."""

    predict_auth_cache_seconds: float = Field(default=5.0, ge=0)
    """How long a replica trusts a token it checked, on the predict path only (admin routes always ask
    the registry); a revocation reaches the other replicas' predict routes within this time."""

    auto_migrate: bool | None = None
    """Upgrade the schema at start; default: only for the embedded SQLite default."""

    plugins: str | None = None
    """Comma-separated allowlist of runtime plugins (entry-point names); default: all installed."""

    device: str = "auto"
    """Default device for models: auto (CUDA when present), cpu, cuda or cuda:N."""

    default_cache_ttl_seconds: int = Field(default=3600, ge=0)
    """Cache lifetime for models that do not set their own (0 = do not cache)."""

    max_artifact_bytes: int = Field(default=2 * 1024**3, gt=0)
    """Largest artifact an upload may carry; larger uploads get 413."""

    max_request_bytes: int = Field(default=16 * 1024**2, gt=0)
    """Largest body for every route except artifact uploads; larger bodies get 413."""

    cache_prefix: str = "modelreg"
    """Prefix of every Redis key and channel this deployment uses."""

    poll_interval_seconds: float = Field(default=3.0, gt=0)
    """How often a replica re-reads live versions from the registry (the pub/sub fallback)."""

    unload_grace_seconds: float = Field(default=60.0, ge=0)
    """How long a replaced version stays loaded so a rollback is instant."""

    first_level_bytes: int = Field(default=64 * 1024**2, ge=0)
    """Budget of the in-process first-level cache in front of Redis (0 turns it off)."""

    embedded_cache_bytes: int = Field(default=64 * 1024**2, ge=0)
    """Budget of the in-process store that stands in for Redis when ``redis_url`` is unset: past it the
    least recently used predictions are evicted (0 keeps none). Ignored with Redis."""

    max_on_demand_versions: int = Field(default=8, ge=1)
    """Versions one replica keeps loaded for the versioned route, promotion checks and pipeline stages
    pinned by number, beside those an alias points at; loading one more unloads the least recently
    used (live and aliased versions never are), so a flood of old version numbers cannot fill memory."""

    reap_interval_seconds: float = Field(default=60.0, gt=0)
    """How often dead cache namespaces (old generations, deleted models) are reclaimed."""

    inference_threads: int | None = Field(default=None, ge=1)
    """Model executions run at once in this replica; default: the CPU cores it may use."""

    intra_op_threads: int | None = Field(default=None, ge=1)
    """Threads a runtime may use inside one execution (ONNX Runtime, PyTorch); default: theirs."""

    inference_timeout_seconds: float = Field(default=30.0, gt=0)
    """Longest a model execution may take before the request gets 504 naming the model."""

    max_queued_rows: int = Field(default=1024, ge=1)
    """Rows that may wait for a model's batch; past it requests get 503 with Retry-After."""

    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    """On SIGTERM, how long in-flight requests may take to finish before they are cancelled and the
    server unloads its models and exits (new connections are refused from the signal on)."""

    keep_alive_seconds: int = Field(default=5, ge=3)
    """How long an idle client connection stays open (uvicorn's ``timeout_keep_alive``). Behind an L7
    load balancer, longer than the balancer's own idle timeout (60 s on an AWS ALB), or it sends on
    connections this server is closing and answers 502. At least 3: the Client drops idle ones at 2 s."""

    gil_switch_interval_ms: float = Field(default=0.5, gt=0, le=100)
    """Python's GIL switch interval in this process (default 5 ms): how long a busy event loop may
    keep an inference thread that finished its pass from returning."""

    gc_freeze: bool = True
    """Keep what lives as long as the process (imports, loaded models) out of the garbage collector's
    full passes, which otherwise walk ~266k objects and stop the event loop ~140 ms (the p99); each
    unload costs one full pass instead. The test suite turns it off (hundreds of apps per process)."""

    otel: bool = False
    """FastAPI's native OpenTelemetry (a span and metrics per request, to the process's global
    providers). Off by default: modelreg's own Prometheus metrics cover requests, and with it on every
    request asks whether a provider is configured (a few environment lookups, ~15% of a cache hit)."""

    @field_validator("cache_prefix")
    @classmethod
    def _prefix_has_no_spaces(cls, value: str) -> str:
        if not value or any(c.isspace() or c in "{}" for c in value):  # a brace would be every key's Cluster hash tag
            raise ValueError("cache_prefix must be non-empty and contain no whitespace, '{' or '}'")
        return value

    def resolved_database_url(self) -> str:
        """The registry URL, with the embedded SQLite default filled in."""
        return self.database_url or embedded_url(self.data_dir)

    def resolved_artifact_dir(self) -> Path:
        return self.artifact_dir or self.data_dir / "artifacts"

    def resolved_artifact_url(self) -> str:
        """``artifact_url``, else the artifact folder."""
        return self.artifact_url or str(self.resolved_artifact_dir())

    def resolved_artifact_cache_dir(self) -> Path:
        return self.artifact_cache_dir or self.data_dir / "artifact-cache"

    def is_embedded_database(self) -> bool:
        return self.database_url is None

    def should_auto_migrate(self) -> bool:
        return self.is_embedded_database() if self.auto_migrate is None else self.auto_migrate

    def plugin_allowlist(self) -> set[str] | None:
        if self.plugins is None or not self.plugins.strip():
            return None
        return {p.strip() for p in self.plugins.split(",") if p.strip()}
