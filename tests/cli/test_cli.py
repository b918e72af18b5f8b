"""The modelreg CLI, run through CliRunner against a real uvicorn server in a subprocess."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

from click.testing import Result
from sqlalchemy import create_engine, inspect

from modelreg.api.cli import app
from modelreg.registry import schema
from tests.cli.conftest import Server, as_json, cli, free_port, ok, runner


def echo_artifact(path: Path, offset: float, padding: int = 0) -> Path:
    # Trailing whitespace keeps the JSON valid, so a big file is still a working version.
    path.write_text(json.dumps({"offset": offset}) + " " * padding)
    return path


def test_plugins_lists_every_installed_runtime(server: Server) -> None:
    table = ok(cli(server, "plugins")).stdout
    assert "echo" in table and "modelreg-echo" in table and "available" in table
    names = {p["name"] for p in as_json(cli(server, "plugins", "--json"))}
    assert {"echo", "onnx"} <= names


def test_a_model_from_creation_to_rollback(server: Server, tmp_path: Path) -> None:
    created = as_json(cli(server, "models", "create", "story", "--runtime", "echo", "--description", "y = x + k",
                          "--tag", "team=ml", "--cache-ttl", "60", "--json"))
    assert created["name"] == "story" and created["tags"] == {"team": "ml"}
    assert "story" in ok(cli(server, "models", "list")).stdout

    for offset in (1.0, 2.0):
        uploaded = ok(cli(server, "upload", "story", str(echo_artifact(tmp_path / f"v{offset}.json", offset))))
        assert "ready" in uploaded.stdout
    listed = as_json(cli(server, "versions", "story", "--json"))
    assert [(v["version"], v["status"], v["format"]) for v in listed] == [(1, "ready", "json"),
                                                                          (2, "ready", "json")]

    assert "production none -> 1" in ok(cli(server, "promote", "story", "1")).stdout
    first = ok(cli(server, "predict", "story", "--json", '{"inputs": [[1.0, 2.0]]}'))
    assert json.loads(first.stdout)["outputs"] == [[2.0, 3.0]]
    assert "X-Model-Version: 1" in first.stderr and "X-Cache: miss" in first.stderr
    assert "X-Cache: hit" in ok(cli(server, "predict", "story", "--json", '{"inputs": [[1.0, 2.0]]}')).stderr

    assert as_json(cli(server, "promote", "story", "2", "--json"))["production"] == 2
    assert "X-Model-Version: 2" in ok(cli(server, "predict", "story", "--json", '{"inputs": [[1.0]]}')).stderr
    assert "production 2 -> 1" in ok(cli(server, "rollback", "story")).stdout

    events = as_json(cli(server, "history", "story", "--json"))
    assert [(e["action"], e["from_version"], e["to_version"], e["actor"]) for e in events] == [
        ("create", None, None, "bootstrap"), ("promote", None, 1, "bootstrap"), ("promote", 1, 2, "bootstrap"),
        ("rollback", 2, 1, "bootstrap")]
    assert "rollback" in ok(cli(server, "history", "story")).stdout

    assert "alias staging -> 2" in ok(cli(server, "alias", "story", "staging", "2")).stdout
    staged = ok(cli(server, "predict", "story", "--alias", "staging", "--json", '{"inputs": [[1.0]]}'))
    assert json.loads(staged.stdout)["outputs"] == [[3.0]] and "X-Model-Version: 2" in staged.stderr
    assert "removed" in ok(cli(server, "alias", "story", "staging", "--delete")).stdout

    before = as_json(cli(server, "models", "show", "story", "--json"))["generation"]
    assert as_json(cli(server, "purge", "story", "--json"))["generation"] == before + 1
    after_purge = ok(cli(server, "predict", "story", "--json", '{"inputs": [[1.0, 2.0]]}'))
    assert "X-Cache: miss" in after_purge.stderr and "X-Model-Version: 1" in after_purge.stderr


def test_update_show_and_delete_a_model(server: Server) -> None:
    ok(cli(server, "models", "create", "short-lived", "--runtime", "echo"))
    updated = as_json(cli(server, "models", "update", "short-lived", "--cache-ttl", "5", "--max-batch-size", "8",
                          "--max-delay-ms", "2", "--device", "cpu", "--description", "temp", "--json"))
    assert updated["cache"]["ttl_seconds"] == 5 and updated["batching"]["max_batch_size"] == 8
    assert updated["device"] == "cpu"
    assert "cache.ttl_seconds" in ok(cli(server, "models", "show", "short-lived")).stdout
    assert "deleted model short-lived" in ok(cli(server, "models", "delete", "short-lived", "--yes")).stdout
    assert cli(server, "models", "show", "short-lived").exit_code == 1


def test_an_unknown_model_exits_1_with_the_servers_message(server: Server) -> None:
    result = cli(server, "models", "show", "ghost")
    assert result.exit_code == 1
    assert "HTTP 404" in result.stderr and "model 'ghost' does not exist" in result.stderr
    assert result.stdout == ""


def test_an_unknown_runtime_is_refused_by_the_server(server: Server) -> None:
    result = cli(server, "models", "create", "nope", "--runtime", "no-such-runtime")
    assert result.exit_code == 1 and "no-such-runtime" in result.stderr
    ok(cli(server, "models", "create", "onnx-model", "--runtime", "onnx"))


def test_a_wrong_token_exits_1_with_the_401_message(server: Server) -> None:
    result = cli(server, "models", "list", MODELREG_ADMIN_TOKEN="not-the-token")
    assert result.exit_code == 1
    assert "HTTP 401" in result.stderr and "invalid or revoked token" in result.stderr
    assert "not-the-token" not in result.output


def test_the_token_is_read_from_the_data_folder_when_not_given(server: Server, tmp_path: Path) -> None:
    (tmp_path / "admin-token").write_text(server.token + "\n")
    ok(cli(server, "models", "list", MODELREG_ADMIN_TOKEN=None, MODELREG_DATA_DIR=str(tmp_path)))
    missing = cli(server, "models", "list", MODELREG_ADMIN_TOKEN=None, MODELREG_DATA_DIR=str(tmp_path / "none"))
    assert missing.exit_code == 1 and "HTTP 401" in missing.stderr and "--token" in missing.stderr


def test_a_server_that_is_down_gets_a_one_line_hint() -> None:
    down = Server(url=f"http://127.0.0.1:{free_port()}", token="unused-token", data_dir=Path("unused"))
    result = cli(down, "models", "list")
    assert result.exit_code == 1
    assert "modelreg serve" in result.stderr and "MODELREG_URL" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_failed_validation_exits_1_with_the_plugins_reason(server: Server, tmp_path: Path) -> None:
    ok(cli(server, "models", "create", "broken-upload", "--runtime", "echo"))
    artifact = tmp_path / "fails.json"
    artifact.write_text('{"fail": true}')
    result = cli(server, "upload", "broken-upload", str(artifact), "--metadata", '{"note": "expected to fail"}')
    assert result.exit_code == 1 and "failed" in result.stdout and "cannot serve" in result.stderr


def upload_peak(server: Server, artifact: Path) -> tuple[Result, int]:
    """Upload ``artifact`` and measure the most Python memory the CLI held meanwhile."""
    tracemalloc.start()
    try:
        result = cli(server, "upload", "big", str(artifact), "--format", "json", "--json")
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_upload_streams_the_file_instead_of_reading_it(server: Server, tmp_path: Path) -> None:
    ok(cli(server, "models", "create", "big", "--runtime", "echo"))
    _, baseline = upload_peak(server, echo_artifact(tmp_path / "small.bin", 5.0))
    result, peak = upload_peak(server, echo_artifact(tmp_path / "big.bin", 5.0, padding=3 * 1024 * 1024))
    assert json.loads(ok(result).stdout)["status"] == "ready"
    # Read whole, the 3 MiB file alone would add 3 MiB; streamed, it adds a few 64 KiB chunks.
    assert peak - baseline < 512 * 1024, f"a 3 MiB upload peaked {peak - baseline} bytes above a tiny one"


def test_an_artifact_over_the_limit_reports_the_413(server: Server, tmp_path: Path) -> None:
    ok(cli(server, "models", "create", "too-big", "--runtime", "echo"))
    artifact = echo_artifact(tmp_path / "huge.json", 1.0, padding=5 * 1024 * 1024)
    result = cli(server, "upload", "too-big", str(artifact))
    assert result.exit_code == 1
    assert "HTTP 413" in result.stderr and "MODELREG_MAX_ARTIFACT_BYTES" in result.stderr


def test_bad_arguments_are_usage_errors(server: Server) -> None:
    assert cli(server, "models", "create", "x", "--runtime", "echo", "--tag", "no-equals").exit_code == 2
    assert cli(server, "alias", "x", "staging").exit_code == 2
    assert cli(server, "predict", "x", "--json", "{not json").exit_code == 2
    assert cli(server, "predict", "x", "--json", "{}", "--version", "1", "--alias", "a").exit_code == 2
    assert cli(server, "models", "update", "x").exit_code == 2


def test_db_upgrade_creates_the_schema_and_current_shows_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    head = schema.head_revision(url)
    env = {"MODELREG_DATABASE_URL": url}
    assert "base (empty)" in ok(runner.invoke(app, ["db", "current"], env=env)).stdout
    upgraded = ok(runner.invoke(app, ["db", "upgrade"], env=env)).stdout
    assert f"upgraded from base (empty) to {head}" in upgraded
    engine = create_engine(url)
    assert {"models", "versions"} <= set(inspect(engine).get_table_names())
    engine.dispose()
    assert ok(runner.invoke(app, ["db", "current"], env=env)).stdout.strip() == f"{head} (head)"
    assert "already at" in ok(runner.invoke(app, ["db", "upgrade"], env=env)).stdout
    downgraded = ok(runner.invoke(app, ["db", "downgrade", "base", "--yes", "--json"], env=env))
    assert json.loads(downgraded.stdout)["to"] is None
    assert runner.invoke(app, ["db", "downgrade", "base"], env=env, input="n\n").exit_code == 1
