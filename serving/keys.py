"""Every Redis key and channel name the server uses, built here and nowhere else.

Prediction keys:  ``{prefix}:p:{model}:g{generation}:v{version}:{sha256[:12]}:{{input digest}}``
Leases:           ``{prefix}:l:{model}:g{generation}:v{version}:{sha256[:12]}:{{input digest}}``
Change events:    ``{prefix}:events`` (a pub/sub channel)
Release figures:  ``{prefix}:shadow:{model}:v{version}``, ``{prefix}:guard:{model}:v{version}:{start}`` (hashes)
Series:           ``{prefix}:s:{model}:{bucket start}`` (a hash of the console's rolling figures, with a TTL)
Reaper's lease:   ``{prefix}:reaper``; the replica board's keys are built in ``replicas.py``

Hash tags (Redis Cluster). The braces around a prediction's input digest (the outer pair in
``{{input digest}}`` above is in the key: ``mr:p:iris:g7:v3:0123456789ab:{5f1c...}``) are a hash tag:
Redis Cluster places a key by the text between its first ``{`` and the next ``}``, so a prediction
key and its lease hash to the same slot, and a script or transaction over the pair (GET the value
or SET NX the lease in one round trip) is valid in a Cluster. The tag is per prediction, not per
model: one hot model's entries spread over every master instead of loading one. Nothing needs all
of one model's keys in one slot: invalidation is a new generation (no SCAN/DEL), the reaper UNLINKs
in batches the client splits by slot, and a non-transactional pipeline (the batched write-behind)
may mix slots. The rule for new keys: a key used alone needs no tag; keys that one script, MULTI
or multi-key command (MGET, DEL of several) touches together must share a tag, and a script must
receive every key it touches in KEYS. So the prefix may hold no braces (it would become the tag of
every key) and an input digest neither. Release figures and series are one hash per key (HINCRBY,
HGETALL), so they need no tag.

The key carries the generation (bumped by promotion, rollback and purge in SQL) and the
version that computed the value, so invalidation is a new key, never a SCAN/DEL. A pipeline's
keys carry, in place of its artifact's digest, one over its artifact and every stage's live
namespace (``pipeline_digest``): a stage's promotion moves the pipeline's answers to new keys too. Model names
follow ``modelreg.names.MODEL_NAME``, so ``:`` never occurs inside one; keys are parsed from the right
so a prefix may itself contain ``:``.

The input digest is taken over the decoded tensors (name, dtype, shape, bytes), never over the JSON
text, so every spelling of the same tensors (whitespace, key order, ``1`` or ``1.0`` for a float
input) shares one cache key. The format tag mixed into it says what the bytes cached under it are.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelreg.names import MODEL_NAME, MODEL_NAME_MAX

# Format tags mixed into the input digest: what the bytes cached under it are. A plugin's own
# payload codec caches its own rendered body, which no other route can read, and a pipeline's V2
# answer is its last stage's arrays: neither may share keys with the canonical entries.
CANONICAL = ""
PLUGIN_BODY = "plugin-body"
PIPELINE_ARRAYS = "pipeline-arrays"

# Bumped whenever a digest's byte layout changes, so old and new keys never collide.
_DIGEST_VERSION = b"modelreg-inputs-v1"
_REQUEST_DIGEST = b"modelreg-pipeline-request-v1"
_NAME_RULE = f"1-{MODEL_NAME_MAX} of letters, digits, '.', '_', '-'"
_SHA_PREFIX_LEN = 12
_HEX = re.compile(r"[0-9a-f]+")
_GENERATION = re.compile(r"g([0-9]+)")
_VERSION = re.compile(r"v([0-9]+)")
_PREDICTION = "p"
_LEASE = "l"
_GLOB_SPECIALS = re.compile(r"([\\*?\[\]])")


@dataclass(frozen=True)
class Namespace:
    """Where one model version's predictions live: prefix, model, generation, version, artifact."""

    prefix: str
    model: str
    generation: int
    version: int
    artifact_sha256: str

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        if not MODEL_NAME.fullmatch(self.model):
            raise ValueError(f"model name {self.model!r} must be {_NAME_RULE}")
        if self.generation < 0 or self.version < 0:
            raise ValueError(f"generation and version must be >= 0, got {self.generation} and {self.version}")
        sha = self.artifact_sha256.lower()
        if len(sha) < _SHA_PREFIX_LEN or not _HEX.fullmatch(sha):
            raise ValueError(f"artifact sha256 {self.artifact_sha256!r} must be hex, at least {_SHA_PREFIX_LEN} digits")


def check_prefix(prefix: str) -> None:
    """ValueError unless ``prefix`` can start every key: non-empty, no whitespace, no ``{`` or ``}``.

    A brace in the prefix would make it the Cluster hash tag of every key (all in one slot)."""
    if not prefix or any(c.isspace() or c in "{}" for c in prefix):
        raise ValueError(f"cache prefix {prefix!r} must be non-empty and contain no whitespace, '{{' or '}}'")


def prediction_key_prefix(ns: Namespace) -> str:
    """Everything of a prediction key but the input digest: computed once per live version."""
    sha = ns.artifact_sha256.lower()[:_SHA_PREFIX_LEN]
    return f"{ns.prefix}:{_PREDICTION}:{ns.model}:g{ns.generation}:v{ns.version}:{sha}:"


def prediction_key(ns: Namespace, input_digest: str) -> str:
    """The cache key of one prediction: the namespace plus the canonical input digest."""
    return key_in(prediction_key_prefix(ns), input_digest)


def pipeline_digest(ident: tuple[object, ...]) -> str:
    """The artifact digest of a pipeline's namespace: its own artifact's and each stage's namespace.

    ``ident`` is the pipeline's (model, generation, version, sha256, stages), each stage as its
    own (model, generation, version, sha256) or, when it is a pipeline, as such an ident itself.
    """
    text = json.dumps(ident, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


# The key of a model whose caching is off (TTL 0): the cache bypasses such a call before it reads
# a key, so none is hashed. Two blake2b passes over the body and the inputs were ~16 µs of every
# such request (bench/miss_cost.py), on a path that never looks them up.
NO_KEY = ""


def key_in(key_prefix: str, input_digest: str) -> str:
    """A prediction key from a prefix made by ``prediction_key_prefix``: the digest is its hash tag."""
    if not input_digest or ":" in input_digest or "{" in input_digest or "}" in input_digest:
        raise ValueError(f"input digest {input_digest!r} must be non-empty and contain no ':', '{{' or '}}'")
    return f"{key_prefix}{{{input_digest}}}"


def exact_body_key(key_prefix: str, body: bytes) -> str:
    """First-level only (never written to Redis): the /predict answer to these exact request bytes.

    Identical bytes are identical inputs, so a repeat skips parsing, tensor digests and Redis. The
    ``b-json-`` mark keeps it apart from the input digests (hex only) and says the encoding.
    """
    return f"{key_prefix}b-json-{hashlib.blake2b(body, digest_size=16).hexdigest()}"


def _update_u64(h: Any, n: int) -> None:
    h.update(n.to_bytes(8, "little"))


def _update_bytes(h: Any, data: bytes) -> None:
    _update_u64(h, len(data))
    h.update(data)


def input_digest(arrays: Mapping[str, np.ndarray], *, response_format: str = CANONICAL) -> str:
    """Hex blake2b-128 of the inputs: sorted names, dtype, shape and C-order bytes of each.

    ``response_format`` names the encoding of the bytes cached under this digest (one of the tags
    above): the same tensors answered in two shapes must not share a key.
    """
    if len(arrays) == 1:
        # Every miss digests its inputs, almost always one numeric tensor: the hash state after
        # everything before its bytes (version, format, name, dtype, shape) is kept per such header
        # and copied, so a digest is one update of the data. The same bytes are hashed in the same
        # order as below, so the digest (a Redis key) is the same either way.
        ((name, value),) = arrays.items()
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
        if array.dtype.kind not in "OU":
            ident = (response_format, name, array.dtype.str, array.shape)
            head = _HEADS.get(ident)
            if head is None:
                head = _head(ident)
            h = head.copy()
            h.update(array.data if array.flags.c_contiguous else np.ascontiguousarray(array).data)
            return str(h.hexdigest())
    return _input_digest(arrays, response_format)


# The hash states of single-tensor headers seen (bounded: shapes vary in the batch dimension only,
# but nothing a client sends may grow the server without bound).
_HEADS: dict[tuple[str, str, str, tuple[int, ...]], Any] = {}
_MAX_HEADS = 1024


def _head(ident: tuple[str, str, str, tuple[int, ...]]) -> Any:
    response_format, name, dtype, shape = ident
    h = _digest_start(response_format, 1)
    _update_tensor_header(h, name, dtype.encode("ascii"), shape)
    if len(_HEADS) >= _MAX_HEADS:
        _HEADS.clear()
    _HEADS[ident] = h
    return h


def _digest_start(response_format: str, tensors: int) -> Any:
    """A hash fed what precedes the tensors: the digest's version, the response format, how many."""
    h = hashlib.blake2b(digest_size=16)
    h.update(_DIGEST_VERSION)
    _update_bytes(h, response_format.encode("utf-8"))
    _update_u64(h, tensors)
    return h


def _update_tensor_header(h: Any, name: str, dtype: bytes, shape: tuple[int, ...]) -> None:
    """What precedes a tensor's data: its name, its dtype (or ``text``) and its shape."""
    _update_bytes(h, name.encode("utf-8"))
    _update_bytes(h, dtype)
    _update_u64(h, len(shape))
    for n in shape:
        _update_u64(h, n)


def _input_digest(arrays: Mapping[str, np.ndarray], response_format: str) -> str:
    """``input_digest`` written out: any number of tensors, text ones too."""
    h = _digest_start(response_format, len(arrays))
    for name in sorted(arrays):
        array = np.asarray(arrays[name])
        text = array.dtype.kind in "OU"
        _update_tensor_header(h, name, b"text" if text else array.dtype.str.encode("ascii"), array.shape)
        if text:
            for item in array.flat:
                if not isinstance(item, str):
                    raise TypeError(f"input {name!r}: text arrays may hold only str, found {type(item).__name__}")
                _update_bytes(h, item.encode("utf-8"))
        else:
            # A flat uint8 view: no copy for contiguous arrays, and any dtype (0-d too) becomes bytes.
            h.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)
    return str(h.hexdigest())


def request_digest(inputs: Any) -> str:
    """Digest of a pipeline request's parsed ``inputs`` as canonical JSON (sorted keys, no whitespace).

    The pipeline's first stage decodes the payload its own way (text, tensors), so the pipeline
    keys its answers on the JSON itself; spellings that differ in number format (``1`` / ``1.0``)
    miss here but still hit the first stage's cache, which digests decoded tensors.
    """
    canonical = orjson.dumps(inputs, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(_REQUEST_DIGEST + canonical, digest_size=16).hexdigest()


def _glob_escape(text: str) -> str:
    return _GLOB_SPECIALS.sub(r"\\\1", text)


def model_scan_pattern(prefix: str, model: str) -> str:
    """SCAN MATCH pattern for every prediction of one model, all generations and versions."""
    if not MODEL_NAME.fullmatch(model):
        raise ValueError(f"model name {model!r} must be {_NAME_RULE}")
    return f"{_glob_escape(prefix)}:{_PREDICTION}:{_glob_escape(model)}:*"


def all_predictions_pattern(prefix: str) -> str:
    """SCAN MATCH pattern for every prediction under a prefix."""
    return f"{_glob_escape(prefix)}:{_PREDICTION}:*"


def _split(key: str) -> list[str] | None:
    # prefix, kind, model, gN, vN, sha12, digest: split from the right, the prefix may hold ':'.
    parts = key.rsplit(":", 6)
    if len(parts) != 7 or not parts[0]:
        return None
    return parts


def parse_prediction_key(key: str | bytes) -> tuple[str, int, int] | None:
    """``(model, generation, version)`` of a prediction key, or None if it is not one."""
    if isinstance(key, bytes):
        try:
            key = key.decode("utf-8")
        except UnicodeDecodeError:
            return None
    parts = _split(key)
    if parts is None:
        return None
    _, kind, model, gen, ver, sha, digest = parts
    if digest.startswith("{") and digest.endswith("}"):
        digest = digest[1:-1]  # the hash tag (keys written before it had none: still parsed, so reaped)
    if kind != _PREDICTION or not MODEL_NAME.fullmatch(model) or not digest:
        return None
    if len(sha) != _SHA_PREFIX_LEN or not _HEX.fullmatch(sha):
        return None
    g, v = _GENERATION.fullmatch(gen), _VERSION.fullmatch(ver)
    if g is None or v is None:
        return None
    return model, int(g.group(1)), int(v.group(1))


def lease_key(prediction_key: str) -> str:
    """The short-lived lease that says one replica is computing ``prediction_key`` (same hash tag, same slot)."""
    # Every miss asks: the lease prefix of each key prefix (one per live version) is worked out once.
    key_prefix, _, digest = prediction_key.rpartition(":")
    found = _LEASE_PREFIXES.get(key_prefix)
    if found is None:
        parts = _split(prediction_key)
        if parts is None or parts[1] != _PREDICTION:
            raise ValueError(f"{prediction_key!r} is not a prediction key")
        parts[1] = _LEASE
        if len(_LEASE_PREFIXES) >= 10_000:  # old generations pile up over a long life
            _LEASE_PREFIXES.clear()
        found = _LEASE_PREFIXES[key_prefix] = ":".join(parts[:-1]) + ":"
    return found + digest


_LEASE_PREFIXES: dict[str, str] = {}


def events_channel(prefix: str) -> str:
    """The pub/sub channel that carries registry change events between replicas."""
    return f"{prefix}:events"


def flight_key(prediction_key: str, read: bool, write: bool) -> str:
    """The in-process single-flight name of one computation of ``prediction_key``.

    Requests that may not read or may not write (``Cache-Control``) must not share a flight with
    those that do: the read/write flags are part of the name. Never a Redis key.
    """
    # A table, not int() formatting: this runs before every Redis read of the miss-or-hit path.
    return prediction_key + _FLIGHT_FLAGS[read][write]


_FLIGHT_FLAGS = (("|00", "|01"), ("|10", "|11"))


def reaper_lease_key(prefix: str) -> str:
    """The lease that says one replica is reaping this prefix (outside the ``{prefix}:p:*`` pattern)."""
    return f"{prefix}:reaper"


def series_key(prefix: str, model: str, bucket: int) -> str:
    """The hash of one model's pooled figures for the 10-second bucket starting at ``bucket`` (serving/series.py).

    Outside the ``{prefix}:p:*`` pattern, so the reaper never looks at it; it expires by its own TTL.
    """
    return f"{prefix}:s:{model}:{bucket}"


def release_figures_key(prefix: str, kind: str, model: str, version: int, since: str = "") -> str:
    """The hash pooling one release check's figures across replicas (HINCRBY by each, read by all).

    ``kind`` is ``shadow`` (what version ``version`` agreed on while shadowing) or ``guard`` (the
    outcomes of a guarded promotion, ``since`` its start, so a new guard on the same version starts
    from zero). Outside the ``{prefix}:p:*`` pattern: the reaper never touches it; it expires by itself.
    """
    if kind not in ("shadow", "guard"):
        raise ValueError(f"release figures kind must be 'shadow' or 'guard', got {kind!r}")
    if not MODEL_NAME.fullmatch(model):
        raise ValueError(f"model name {model!r} must be {_NAME_RULE}")
    return f"{prefix}:{kind}:{model}:v{version}" + (f":{since}" if since else "")
