"""Every cache key is versioned, parses back, and leases and channels stay out of the key space."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

import numpy as np
import pytest

from modelreg.serving.keys import (
    CANONICAL,
    PIPELINE_ARRAYS,
    PLUGIN_BODY,
    Namespace,
    all_predictions_pattern,
    events_channel,
    exact_body_key,
    input_digest,
    key_in,
    lease_key,
    model_scan_pattern,
    parse_prediction_key,
    prediction_key,
    prediction_key_prefix,
    request_digest,
)

SHA = "0123456789abcdef" * 4
NS = Namespace(prefix="mr", model="iris.v2_x-1", generation=7, version=3, artifact_sha256=SHA)


def test_prediction_key_carries_model_generation_version_and_artifact() -> None:
    assert prediction_key(NS, "d1g3st") == "mr:p:iris.v2_x-1:g7:v3:0123456789ab:{d1g3st}"


def test_prediction_key_parses_back() -> None:
    key = prediction_key(NS, "d1g3st")
    assert parse_prediction_key(key) == ("iris.v2_x-1", 7, 3)
    assert parse_prediction_key(key.encode()) == ("iris.v2_x-1", 7, 3)


def test_prefix_may_contain_colons() -> None:
    ns = Namespace(prefix="team:a", model="m", generation=1, version=2, artifact_sha256=SHA)
    key = prediction_key(ns, "abc")
    assert parse_prediction_key(key) == ("m", 1, 2)
    assert fnmatchcase(key, all_predictions_pattern("team:a"))


def test_every_namespace_part_changes_the_key() -> None:
    base = prediction_key(NS, "abc")
    others = [
        Namespace("mr", NS.model, 8, 3, SHA),
        Namespace("mr", NS.model, 7, 4, SHA),
        Namespace("mr", NS.model, 7, 3, "f" * 64),
        Namespace("mr", "other", 7, 3, SHA),
        Namespace("mr2", NS.model, 7, 3, SHA),
    ]
    keys = {prediction_key(ns, "abc") for ns in others}
    assert base not in keys and len(keys) == len(others)


def test_non_prediction_keys_do_not_parse() -> None:
    key = prediction_key(NS, "abc")
    for other in [lease_key(key), events_channel("mr"), "mr:p:m:gx:v1:0123456789ab:abc", "mr:p:m:g1:v1:short:abc",
                  "mr:p:bad name:g1:v1:0123456789ab:abc", "p:m:g1:v1:0123456789ab", b"\xff\xfe", "",
                  "mr:p:m:g\u00b2:v1:0123456789ab:a"]:
        assert parse_prediction_key(other) is None, other


def test_lease_is_outside_the_prediction_scan() -> None:
    key = prediction_key(NS, "abc")
    lease = lease_key(key)
    assert lease != key and lease.startswith("mr:")
    assert not fnmatchcase(lease, all_predictions_pattern("mr"))
    assert fnmatchcase(key, all_predictions_pattern("mr"))


def test_model_scan_pattern_matches_only_that_model() -> None:
    pattern = model_scan_pattern("mr", "iris")
    assert fnmatchcase(prediction_key(Namespace("mr", "iris", 1, 1, SHA), "a"), pattern)
    assert not fnmatchcase(prediction_key(Namespace("mr", "iris2", 1, 1, SHA), "a"), pattern)


def test_glob_characters_in_the_prefix_are_escaped() -> None:
    assert all_predictions_pattern("a*b") == "a\\*b:p:*"


def test_events_channel_is_under_the_prefix() -> None:
    assert events_channel("mr") == "mr:events"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "has space"}, "model name"),
        ({"model": "x" * 129}, "model name"),
        ({"prefix": ""}, "cache prefix"),
        ({"generation": -1}, "generation and version"),
        ({"artifact_sha256": "not-hex-at-all"}, "artifact sha256"),
    ],
)
def test_namespace_refuses_bad_parts(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"prefix": "mr", "model": "m", "generation": 1, "version": 1, "artifact_sha256": SHA}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Namespace(**fields)  # type: ignore[arg-type]


def test_digest_with_a_colon_is_refused() -> None:
    with pytest.raises(ValueError, match="contain no ':'"):
        prediction_key(NS, "a:b")


def test_the_exact_body_alias_names_the_bytes_and_stays_apart_from_input_digests() -> None:
    prefix = prediction_key_prefix(NS)
    alias = exact_body_key(prefix, b'{"inputs": [[1, 2]]}')
    assert alias.startswith(prefix + "b-json-") and alias == exact_body_key(prefix, b'{"inputs": [[1, 2]]}')
    assert alias != exact_body_key(prefix, b'{"inputs":[[1,2]]}')  # other bytes, other alias (same inputs)
    assert re.fullmatch(re.escape(prefix) + "b-json-[0-9a-f]{32}", alias)  # blake2b-128
    assert alias != key_in(prefix, input_digest({"x": np.array([[1, 2]])}))


def test_a_pipeline_request_digest_ignores_key_order_and_whitespace_but_not_values() -> None:
    assert request_digest({"a": [1], "b": "t"}) == request_digest({"b": "t", "a": [1]})
    assert request_digest([[1, 2]]) != request_digest([[2, 1]])


def test_format_tags_keep_the_same_tensors_apart() -> None:
    arrays = {"x": np.array([[1.0]], np.float32)}
    digests = {input_digest(arrays, response_format=tag) for tag in (CANONICAL, PLUGIN_BODY, PIPELINE_ARRAYS)}
    assert len(digests) == 3 and input_digest(arrays) == input_digest(arrays, response_format=CANONICAL)


def test_a_prediction_and_its_lease_share_one_cluster_slot_and_predictions_spread() -> None:
    from redis.crc import key_slot  # the slot function Redis Cluster and redis-py use

    digests = [input_digest({"x": np.array([float(i)])}) for i in range(200)]
    keys = [prediction_key(NS, d) for d in digests]
    for key in keys:
        assert key_slot(key.encode()) == key_slot(lease_key(key).encode())
    # One tag per prediction: one model's entries land all over the 16,384 slots, not in one.
    assert len({key_slot(k.encode()) for k in keys}) > 150


def test_keys_written_before_the_hash_tag_still_parse_so_the_reaper_reclaims_them() -> None:
    assert parse_prediction_key("mr:p:iris:g2:v1:0123456789ab:d1g3st") == ("iris", 2, 1)
    assert parse_prediction_key("mr:p:iris:g2:v1:0123456789ab:{}") is None


@pytest.mark.parametrize("prefix", ["a{b", "a}b", "{mr}"])
def test_a_prefix_with_a_brace_is_refused_it_would_be_every_keys_hash_tag(prefix: str) -> None:
    with pytest.raises(ValueError, match="'{' or '}'"):
        Namespace(prefix, "m", 1, 1, SHA)


def test_a_digest_with_a_brace_is_refused() -> None:
    with pytest.raises(ValueError, match="contain no ':', '{' or '}'"):
        prediction_key(NS, "a}b")


def test_a_single_tensors_digest_is_the_same_by_the_kept_header_as_written_out() -> None:
    """The fast path's digests are Redis keys: they must equal the general path's, byte for byte."""
    from modelreg.serving import keys

    rng = np.random.default_rng(7)
    cases = [rng.random((1, 512), dtype=np.float32), rng.random((3, 4)), np.arange(6, dtype=np.int64).reshape(2, 3),
             np.array(True), np.asfortranarray(rng.random((4, 3))), rng.random((8, 6))[:, ::2],
             np.array([[1, 2]], dtype=">i4"), np.zeros((0, 5), np.float32)]
    for array in cases:
        for response_format in (keys.CANONICAL, keys.PLUGIN_BODY):
            expected = keys._input_digest({"x": array}, response_format)
            assert keys.input_digest({"x": array}, response_format=response_format) == expected
            assert keys.input_digest({"x": array}, response_format=response_format) == expected  # the kept header
    assert input_digest({"x": [[1.0, 2.0]]}) == input_digest({"x": np.array([[1.0, 2.0]])})
    assert input_digest({"x": np.ones((1, 2))}) != input_digest({"y": np.ones((1, 2))})
    assert input_digest({"x": np.ones((1, 2))}) != input_digest({"x": np.ones((2, 1))})
    assert input_digest({"x": np.ones((1, 2), np.float32)}) != input_digest({"x": np.ones((1, 2))})


def test_the_kept_headers_are_bounded_whatever_shapes_clients_send() -> None:
    from modelreg.serving import keys

    for rows in range(keys._MAX_HEADS + 50):
        input_digest({"x": np.zeros((rows, 1), np.float32)})
    assert len(keys._HEADS) <= keys._MAX_HEADS
