"""V2 request bodies may come gzip- or deflate-compressed, as tritonclient sends them; inflating is bounded."""

from __future__ import annotations

import gzip
import zlib

import pytest

from modelreg.api.routes.v2 import decompress
from modelreg.serving.v2codec import V2BadRequest

BODY = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}'


def test_gzip_deflate_and_identity_bodies_are_read() -> None:
    assert decompress(gzip.compress(BODY), "gzip", 1024) == BODY
    assert decompress(zlib.compress(BODY), "Deflate", 1024) == BODY
    assert decompress(BODY, "identity", 1024) == BODY


@pytest.mark.parametrize(("body", "encoding", "message"), [
    (gzip.compress(b" " * 100_000), "gzip", "exceeds the limit of 1024 bytes"),
    (gzip.compress(BODY)[:-10], "gzip", "the gzip body is truncated"),
    (b"plain text", "gzip", "not valid gzip data"),
    (BODY, "br", "unsupported Content-Encoding 'br'"),
])
def test_a_bad_or_oversized_compressed_body_is_refused(body: bytes, encoding: str, message: str) -> None:
    with pytest.raises(V2BadRequest, match=message):
        decompress(body, encoding, 1024)
