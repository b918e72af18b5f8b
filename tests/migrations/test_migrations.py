"""The schema comes only from modelreg.migrations, and migrations match the models exactly."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from modelreg.registry import SchemaOutOfDate, schema
from modelreg.registry.db import Base, make_engine


def test_upgrade_downgrade_and_upgrade_again(database_url: str) -> None:
    schema.upgrade(database_url)
    engine = make_engine(database_url)
    assert {"models", "versions", "aliases", "history"} <= set(inspect(engine).get_table_names())
    schema.downgrade(database_url, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    schema.upgrade(database_url)
    assert schema.current_revision(engine) == schema.head_revision(database_url)
    engine.dispose()


def test_autogenerate_finds_no_difference_between_models_and_migrations(database_url: str) -> None:
    schema.upgrade(database_url)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == []


def test_an_older_schema_is_refused_with_the_command_to_run(database_url: str) -> None:
    engine = make_engine(database_url)
    with pytest.raises(SchemaOutOfDate, match="run `modelreg db upgrade`"):
        schema.ensure_current(engine, database_url)
    schema.upgrade(database_url)
    schema.ensure_current(engine, database_url)
    engine.dispose()


def test_a_registry_at_0001_keeps_its_data_and_gains_the_token_table(database_url: str) -> None:
    schema.upgrade(database_url, "0001")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO models (name, runtime, description, tags, cache_enabled, max_batch_size, "
                             "max_delay_ms, generation, next_version, created_at, updated_at) VALUES "
                             "('m', 'echo', '', '{}', true, 16, 5, 1, 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
    head = schema.head_revision(database_url)
    with pytest.raises(SchemaOutOfDate, match=f"schema is 0001, this modelreg needs {head}"):
        schema.ensure_current(engine, database_url)
    schema.upgrade(database_url)
    schema.ensure_current(engine, database_url)
    assert "api_tokens" in inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT name FROM models").scalars().all() == ["m"]
    schema.downgrade(database_url, "0001")
    assert "api_tokens" not in inspect(engine).get_table_names()
    engine.dispose()
