"""What a name may be: models, aliases, runtimes and tokens. One rule, imported by every layer.

A leaf module (it imports nothing of modelreg), so the registry, the plugins and the engine can all
use it without importing each other. Names never contain ``:`` or ``/``, which the cache keys and
the URL paths rely on.
"""

from __future__ import annotations

import re

MODEL_NAME_MAX = 128
ALIAS_MAX = 64
RUNTIME_MAX = 64
TOKEN_NAME_MAX = 64

_CHARS = r"[A-Za-z0-9._-]"
MODEL_NAME = re.compile(rf"{_CHARS}{{1,{MODEL_NAME_MAX}}}")
ALIAS = re.compile(rf"{_CHARS}{{1,{ALIAS_MAX}}}")
RUNTIME = re.compile(rf"{_CHARS}{{1,{RUNTIME_MAX}}}")
TOKEN_NAME = re.compile(rf"{_CHARS}{{1,{TOKEN_NAME_MAX}}}")


def is_model_name(value: object) -> bool:
    """Letters, digits, ``-``, ``_`` and ``.``; 1 to 128 characters."""
    return isinstance(value, str) and MODEL_NAME.fullmatch(value) is not None


def is_alias(value: object) -> bool:
    """Letters, digits, ``-``, ``_`` and ``.``; 1 to 64 characters."""
    return isinstance(value, str) and ALIAS.fullmatch(value) is not None


def is_runtime_name(value: object) -> bool:
    return isinstance(value, str) and RUNTIME.fullmatch(value) is not None


def is_token_name(value: object) -> bool:
    return isinstance(value, str) and TOKEN_NAME.fullmatch(value) is not None
