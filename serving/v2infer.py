"""The V2 infer answer, from request bytes to response bytes, as fast as ``/predict``'s.

The same keys and canonical entries as ``Serving.predict`` (one input is one key, whichever route
asked first), plus what the predict path has and V2 lacked: a first-level alias keyed by the exact
request bytes that holds the rendered V2 JSON body, so a repeated request is answered without
parsing 512 floats, digesting them, looking up the entry and rendering it again. Answers with
binary outputs are not aliased (their JSON header length travels beside the body); they still hit
the canonical entry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import cast

from modelreg.plugins.base import stages_of
from modelreg.serving import v2codec
from modelreg.serving.cache import CacheStatus
from modelreg.serving.calls import ANY_CACHE, CacheControl
from modelreg.serving.engine import Serving
from modelreg.serving.keys import NO_KEY, input_digest, key_in
from modelreg.serving.manager import Servable


@dataclass(frozen=True, slots=True)
class V2Answer:
    """The response body, the JSON header's length when binary outputs follow it, who answered."""

    body: bytes
    header_length: int | None
    version: int
    cache_status: str


def exact_v2_key(key_prefix: str, body: bytes, header_length: str | None) -> str:
    """First-level only (never written to Redis): the V2 answer to these exact bytes and header.

    The ``b-v2-`` mark keeps it apart from /predict's ``b-json-`` aliases of the same bytes (the two
    routes render different bodies) and from the input digests (hex only).
    """
    h = hashlib.blake2b(body, digest_size=16)
    if header_length is not None:  # the same bytes split elsewhere are another request
        h.update(b"\0" + header_length.encode("latin-1"))
    return f"{key_prefix}b-v2-{h.hexdigest()}"


async def infer_v2(serving: Serving, name: str, body: bytes, header_length: str | None = None, *,
                   version: int | None = None, control: CacheControl = ANY_CACHE,
                   request_key: str | None = None) -> V2Answer:
    """The V2 response to ``body`` (already decompressed) on the production route or a numbered version.

    ``request_key`` (``X-Request-Key``) picks the traffic-split arm on the production route, as for predict.
    """
    servable = await serving.resolve(name, version, request_key=request_key)
    state = servable.state
    if stages_of(servable.model) is not None or state.guard is not None or state.shadow is not None:
        # Pipelines (the engine runs their stages) and versions under release (a guard counts every
        # answer, the shadow is offered it): the engine's general path, without the exact alias.
        return await _general(serving, servable, body, header_length, control, routed=version is None)
    key_prefix = serving.key_prefix(servable)
    caching = serving.caches(servable)
    if caching:
        exact = exact_v2_key(key_prefix, body, header_length)
        repeated = serving.repeat(exact, control)
        if repeated is not None:
            return V2Answer(repeated, None, servable.version, "hit")
    else:
        exact = NO_KEY
    parsed = v2codec.parse_request(body, header_length)
    # Run on the version resolved above: the inputs are checked against its signature, and a
    # promotion landing in between must not run them on another one.
    arrays = v2codec.decode_request(parsed, servable.signature)
    key = key_in(key_prefix, input_digest(arrays)) if caching else NO_KEY
    inference = await serving.inference(servable, key, lambda: serving.run(servable, arrays), control)
    content, length = v2codec.encode_response(parsed, name, servable.version, inference.outputs)
    if length is None:
        serving.remember(exact, key, cast(CacheStatus, inference.cache_status), control, content)
    return V2Answer(content, length, servable.version, inference.cache_status)


async def _general(serving: Serving, servable: Servable, body: bytes, header_length: str | None,
                   control: CacheControl, *, routed: bool) -> V2Answer:
    parsed = v2codec.parse_request(body, header_length)
    arrays = v2codec.decode_request(parsed, servable.signature)
    inference = await serving.infer_resolved(servable, arrays, control, routed=routed)
    content, length = v2codec.encode_response(parsed, servable.name, inference.version, inference.outputs)
    return V2Answer(content, length, inference.version, inference.cache_status)
