"""Errors the serving layer raises; messages are written for API clients, HTTP lives in api/errors.py."""

from __future__ import annotations


class ServingError(Exception):
    """Base of every error raised by ``api.serving``."""


class InvalidInput(ServingError):
    """The request payload does not fit the model's signature; the message says what was expected."""
