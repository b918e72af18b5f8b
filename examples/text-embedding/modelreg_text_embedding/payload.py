"""What a client may send to a sentence-embedding model, and what it gets back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

MAX_TEXTS = 256
MAX_CHARS = 10_000


def decode_texts(inputs: Any) -> dict[str, np.ndarray]:
    """``"text"`` or ``["text", ...]`` -> ``{"text": object array of str}``; ValueError explains a refusal."""
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(texts, list):
        raise ValueError(f'"inputs" must be a string or a list of strings, not {_kind(inputs)}')
    if not texts:
        raise ValueError('"inputs" is an empty list; send at least one string')
    if len(texts) > MAX_TEXTS:
        raise ValueError(f'"inputs" holds {len(texts)} strings; send at most {MAX_TEXTS} per request')
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f'"inputs"[{index}] is {_kind(text)}; every input must be a string')
        if len(text) > MAX_CHARS:
            raise ValueError(f'"inputs"[{index}] has {len(text)} characters; at most {MAX_CHARS} are accepted')
    return {"text": np.array(texts, dtype=object)}


def encode_embeddings(outputs: Mapping[str, np.ndarray]) -> list[list[float]]:
    """One list of floats per input text, in request order."""
    embeddings: list[list[float]] = np.asarray(outputs["embedding"]).tolist()
    return embeddings


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
