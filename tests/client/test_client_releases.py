"""modelreg.Client's release calls against a real server: a canary split, a shadow, a guarded promotion."""

from __future__ import annotations

import io
import json

import pytest

from modelreg import Client, Conflict, InvalidRequest, NotFound


def echo_model(client: Client, name: str, *offsets: float) -> None:
    """An echo-plugin model (y = x + offset per version), v1 in production."""
    client.create_model(name, "echo")
    for offset in offsets:
        client.upload(name, io.BytesIO(json.dumps({"offset": offset}).encode()), filename="model.json")
    client.promote(name, 1)


def test_a_canary_split_from_python(client: Client) -> None:
    echo_model(client, "c-split", 1.0, 2.0)
    client.set_alias("c-split", "canary", 2)
    assert client.traffic("c-split") == {"model": "c-split", "weights": None}
    split = client.set_traffic("c-split", {"production": 0, "canary": 100})
    assert split == {"model": "c-split", "weights": {"canary": 100, "production": 0}}
    assert client.traffic("c-split") == split
    assert client.get_model("c-split")["traffic"] == split
    answer = client.predict("c-split", [[0.0]])
    assert (answer.version, answer.outputs) == (2, [[2.0]])  # the replica that took the change serves it at once
    with pytest.raises(Conflict, match="change the split first"):
        client.delete_alias("c-split", "canary")
    with pytest.raises(InvalidRequest, match="must add up to 100"):
        client.set_traffic("c-split", {"production": 50})
    assert client.history("c-split")[-1]["reason"] == "canary=100 production=0"
    client.clear_traffic("c-split")
    assert client.traffic("c-split")["weights"] is None
    assert client.predict("c-split", [[0.0]]).version == 1


def test_a_shadow_from_python(client: Client) -> None:
    echo_model(client, "c-shadow", 1.0, 2.0)
    assert client.set_shadow("c-shadow", 2, 25) == {"model": "c-shadow", "version": 2, "percent": 25.0}
    figures = client.shadow("c-shadow")
    assert (figures["version"], figures["percent"]) == (2, 25.0)
    assert {"compared", "agreed", "dropped", "max_abs_diff"} <= set(figures)
    with pytest.raises(InvalidRequest, match="v1 is the production version"):
        client.set_shadow("c-shadow", 1, 25)
    with pytest.raises(NotFound, match="has no version 7"):
        client.set_shadow("c-shadow", 7, 25)
    client.clear_shadow("c-shadow")
    assert client.shadow("c-shadow")["version"] is None


def test_a_guarded_promotion_from_python(client: Client) -> None:
    echo_model(client, "c-guard", 1.0, 2.0)
    change = client.promote("c-guard", 2, guard={"window_seconds": 600, "max_error_rate": 0.01, "min_requests": 50})
    assert (change["production"], change["previous"]) == (2, 1)
    guard = change["guard"]
    assert (guard["version"], guard["replaced"]) == (2, 1)
    assert guard["spec"] == {"window_seconds": 600, "min_requests": 50, "max_error_rate": 0.01, "max_p99_ms": None}
    assert client.get_model("c-guard")["guard"] == guard
    with pytest.raises(InvalidRequest, match="a guard needs a limit to watch"):
        client.promote("c-guard", 1, guard={"window_seconds": 60})
    assert client.get_model("c-guard")["production"] == 2
