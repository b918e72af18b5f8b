"""`modelreg traffic`, `modelreg shadow` and `modelreg promote --guard-*` against a real server."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import Server, as_json, cli, ok
from tests.cli.test_cli_status import upload_echo


def test_a_canary_split_is_set_shown_recorded_and_cleared(server: Server, tmp_path: Path) -> None:
    upload_echo(server, tmp_path, "split", 1.0, 2.0)
    ok(cli(server, "promote", "split", "1"))
    ok(cli(server, "alias", "split", "canary", "2"))
    assert ok(cli(server, "traffic", "split")).stdout.strip() == \
        "split: no traffic split, every request goes to production"
    printed = ok(cli(server, "traffic", "split", "production=90", "canary=10")).stdout
    assert printed.strip() == "split: traffic production=90 canary=10"
    assert as_json(cli(server, "traffic", "split", "--json")) == {"model": "split",
                                                                  "weights": {"production": 90, "canary": 10}}
    assert "production=90 canary=10" in ok(cli(server, "history", "split")).stdout  # the REASON column
    assert ok(cli(server, "traffic", "split", "--clear")).stdout.strip() == \
        "split: no traffic split, every request goes to production"
    assert as_json(cli(server, "traffic", "split", "--json"))["weights"] is None


def test_a_bad_split_says_what_to_fix(server: Server, tmp_path: Path) -> None:
    upload_echo(server, tmp_path, "badsplit", 1.0)
    ok(cli(server, "promote", "badsplit", "1"))
    usage = cli(server, "traffic", "badsplit", "production=ninety")
    assert usage.exit_code == 2 and "is not ALIAS=WEIGHT" in usage.output
    both = cli(server, "traffic", "badsplit", "production=100", "--clear")
    assert both.exit_code == 2 and "not both" in both.output
    refused = cli(server, "traffic", "badsplit", "production=90", "canary=10")
    assert refused.exit_code == 1
    assert "error: HTTP 422: model 'badsplit' has no alias 'canary'" in refused.stderr
    summed = cli(server, "traffic", "badsplit", "production=90")
    assert "the weights must add up to 100; these add up to 90" in summed.stderr


def test_a_shadow_is_started_shown_with_its_figures_and_stopped(server: Server, tmp_path: Path) -> None:
    upload_echo(server, tmp_path, "shadowed", 1.0, 2.0)
    ok(cli(server, "promote", "shadowed", "1"))
    assert ok(cli(server, "shadow", "shadowed")).stdout.strip() == "shadowed: no shadow"
    started = ok(cli(server, "shadow", "shadowed", "2", "--percent", "20")).stdout
    assert started.strip() == "shadowed: shadow v2 on 20% of production requests"
    shown = as_json(cli(server, "shadow", "shadowed", "--json"))
    assert (shown["version"], shown["percent"]) == (2, 20.0)
    assert {"compared", "agreed", "dropped", "max_abs_diff"} <= set(shown)
    assert "shadowed: shadow v2 on 20% of production requests; compared" in ok(cli(server, "shadow", "shadowed")).stdout
    assert ok(cli(server, "shadow", "shadowed", "--stop")).stdout.strip() == "shadowed: shadow stopped"
    assert as_json(cli(server, "shadow", "shadowed", "--json"))["version"] is None


def test_shadow_arguments_go_together(server: Server) -> None:
    alone = cli(server, "shadow", "anything", "2")
    assert alone.exit_code == 2 and "give a VERSION and --percent together" in alone.output
    stop = cli(server, "shadow", "anything", "2", "--percent", "5", "--stop")
    assert stop.exit_code == 2 and "--stop takes no VERSION" in stop.output
    over = cli(server, "shadow", "anything", "2", "--percent", "150")
    assert over.exit_code == 2 and "--percent" in over.output


def test_a_guarded_promotion_says_what_it_watches(server: Server, tmp_path: Path) -> None:
    upload_echo(server, tmp_path, "guarded", 1.0, 2.0, 3.0)
    ok(cli(server, "promote", "guarded", "1"))
    printed = ok(cli(server, "promote", "guarded", "2", "--guard-error-rate", "0.01", "--guard-window", "300",
                     "--guard-min-requests", "100", "--guard-p99-ms", "250")).stdout
    assert "guarded: production 1 -> 2" in printed
    assert "guarded for 300s until" in printed
    assert "rolls back to v1 on error rate > 0.01 or p99 > 250 ms (after 100 requests)" in printed
    change = as_json(cli(server, "promote", "guarded", "3", "--guard-error-rate", "0.05", "--json"))
    assert (change["guard"]["version"], change["guard"]["replaced"]) == (3, 2)
    assert change["guard"]["spec"] == {"window_seconds": 300, "min_requests": None, "max_error_rate": 0.05,
                                       "max_p99_ms": None}
    model = as_json(cli(server, "models", "show", "guarded", "--json"))
    assert model["guard"]["version"] == 3
    no_limit = cli(server, "promote", "guarded", "1", "--guard-window", "60")
    assert no_limit.exit_code == 1 and "a guard needs a limit to watch" in no_limit.stderr
