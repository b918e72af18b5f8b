"""Schema revisions: upgrade to head, or refuse to start on an older schema with what to run."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from modelreg import migrations
from modelreg.registry.errors import SchemaOutOfDate


def alembic_config(url: str) -> Config:
    """An Alembic config that works from a checkout and from an installed wheel alike."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["url"] = url
    return config


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def ensure_current(engine: Engine, url: str) -> None:
    """Raise SchemaOutOfDate unless the database is at this code's head revision."""
    current, head = current_revision(engine), head_revision(url)
    if current != head:
        shown = current or "empty (no modelreg tables)"
        raise SchemaOutOfDate(
            f"the registry database schema is {shown}, this modelreg needs {head}: "
            "run `modelreg db upgrade` (with the same MODELREG_DATABASE_URL) and start again"
        )
