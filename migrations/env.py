"""Alembic environment: the URL comes from the caller or MODELREG_DATABASE_URL (never from the api package)."""

from __future__ import annotations

from alembic import context

from modelreg.registry import tables  # noqa: F401  (registers the tables on the metadata)
from modelreg.registry.db import Base, make_engine, url_from_environment

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.attributes.get("url") or url_from_environment()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=_url().startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection: object) -> None:
    # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
    context.configure(connection=connection, target_metadata=target_metadata,  # type: ignore[arg-type]
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)  # type: ignore[attr-defined]
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
