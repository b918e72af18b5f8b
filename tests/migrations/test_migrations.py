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


def test_a_registry_at_0002_gains_the_release_tables_and_pins_its_production_versions(database_url: str) -> None:
    schema.upgrade(database_url, "0002")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO models (id, name, runtime, description, tags, cache_enabled, max_batch_size, "
                             "max_delay_ms, generation, next_version, created_at, updated_at) VALUES "
                             "(1, 'm', 'echo', '', '{}', true, 16, 5, 7, 3, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
        for number in (1, 2):
            conn.exec_driver_sql("INSERT INTO versions (model_id, number, sha256, size_bytes, format, metadata, "
                                 f"status, created_at, created_by) VALUES (1, {number}, 'ab', 1, 'json', '{{}}', "
                                 "'ready', CURRENT_TIMESTAMP, 'alice')")
        conn.exec_driver_sql("INSERT INTO aliases (model_id, name, version, updated_at) VALUES "
                             "(1, 'production', 2, CURRENT_TIMESTAMP), (1, 'staging', 1, CURRENT_TIMESTAMP)")
    schema.upgrade(database_url)
    assert {"traffic_arms", "shadows", "guards"} <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        pins = conn.exec_driver_sql("SELECT number, key_generation FROM versions ORDER BY number").all()
    assert [tuple(row) for row in pins] == [(1, None), (2, 7)]  # production keeps the key it had: generation 7
    schema.downgrade(database_url, "0002")
    assert not {"traffic_arms", "shadows", "guards"} & set(inspect(engine).get_table_names())
    assert "key_generation" not in {c["name"] for c in inspect(engine).get_columns("versions")}
    assert "reason" not in {c["name"] for c in inspect(engine).get_columns("history")}
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM versions").scalar() == 2
    engine.dispose()
