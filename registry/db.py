"""Engine and sessions from a URL: SQLite pragmas for safe concurrency, a pool for PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from modelreg.registry.errors import Unavailable

# Named constraints keep Alembic diffs stable across databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# libpq: give up connecting after 3 s, and notice a dead peer on an idle connection within ~25 s.
POSTGRES_CONNECT_ARGS: dict[str, Any] = {"connect_timeout": 3, "keepalives": 1, "keepalives_idle": 10,
                                         "keepalives_interval": 5, "keepalives_count": 3}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def embedded_url(data_dir: Path) -> str:
    """The embedded default: a SQLite file under the data folder."""
    return f"sqlite:///{(data_dir / 'modelreg.db').resolve()}"


def url_from_environment() -> str:
    """The URL a bare ``alembic`` run uses: MODELREG_DATABASE_URL, else the embedded default."""
    return os.environ.get("MODELREG_DATABASE_URL") or embedded_url(Path(os.environ.get("MODELREG_DATA_DIR", "data")))


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and write-serialising transactions."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)
        _configure_sqlite(engine)
        return engine
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        # A database that is down must cost a request seconds, not minutes: admin routes answer 503
        # quickly and loaded models keep serving. The URL's own parameters win over these.
        kwargs.setdefault("connect_args", {k: v for k, v in POSTGRES_CONNECT_ARGS.items() if k not in parsed.query})
        kwargs.setdefault("pool_timeout", 5)
    # pre_ping: after an outage the pooled connections are dead; each is tested and replaced on checkout.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling defers BEGIN; we emit BEGIN IMMEDIATE ourselves so
        # that two writers serialise on the database lock instead of failing on upgrade.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode=WAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` says the database cannot be reached, not that a statement is wrong.

    A refused or lost connection, a pool with none to give, or a connection the driver gave up on.
    Any other DBAPIError (an IntegrityError, say) is a bug or a constraint and stays what it is.
    """
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeout)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction (committed on success); an outage leaves it as Unavailable, so no layer above
    the registry needs to know SQLAlchemy's exception types."""
    try:
        with sessions.begin() as session:
            yield session
    except (DBAPIError, PoolTimeout) as exc:
        if is_outage(exc):
            raise Unavailable(f"{type(exc).__name__}: {_first_line(exc)}") from exc
        raise


def ping(sessions: sessionmaker[Session]) -> None:
    """One round trip to the database; Unavailable when it does not answer."""
    with transaction(sessions) as session:
        session.execute(text("SELECT 1"))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""
