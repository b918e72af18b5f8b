"""`modelreg status` and `promote --wait` against a real one-replica server (the embedded default)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Server, as_json, cli, ok


def upload_echo(server: Server, tmp_path: Path, name: str, *offsets: float) -> None:
    ok(cli(server, "models", "create", name, "--runtime", "echo"))
    for offset in offsets:
        artifact = tmp_path / f"{name}-{offset}.json"
        artifact.write_text(json.dumps({"offset": offset}))
        ok(cli(server, "upload", name, str(artifact)))


def test_status_prints_the_replica_and_what_it_serves(server: Server, tmp_path: Path) -> None:
    upload_echo(server, tmp_path, "status-iris", 1.0)
    ok(cli(server, "promote", "status-iris", "1"))
    (replica,) = as_json(cli(server, "status", "--json"))
    assert replica["this"] is True and replica["models"]["status-iris"]["serving"] == {"production": 1}
    table = ok(cli(server, "status")).stdout
    assert f"{replica['id']} (this)" in table and "status-iris" in table and "production=v1" in table
    assert "v1@cpu" in table


def test_promote_with_wait_reports_every_replica_serving_it(server: Server, tmp_path: Path) -> None:
    upload_echo(server, tmp_path, "wait-iris", 1.0, 2.0)
    ok(cli(server, "promote", "wait-iris", "1"))
    printed = ok(cli(server, "promote", "wait-iris", "2", "--wait", "5")).stdout
    assert "production 1 -> 2" in printed and "served by 1 of 1 live replicas" in printed
    change = as_json(cli(server, "rollback", "wait-iris", "--wait", "5", "--json"))
    assert (change["production"], change["complete"], len(change["replicas"]["served"])) == (1, True, 1)


def test_a_wait_over_300_seconds_is_a_usage_error(server: Server) -> None:
    result = cli(server, "promote", "anything", "2", "--wait", "301")
    assert result.exit_code == 2 and "--wait" in result.output
