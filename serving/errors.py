"""Errors the serving layer raises; messages are written for API clients, HTTP lives in api/errors.py."""

from __future__ import annotations


class ServingError(Exception):
    """Base of every error raised by ``modelreg.serving``."""


class InvalidInput(ServingError):
    """The request payload does not fit the model's signature; the message says what was expected."""


class Overloaded(ServingError):
    """The model's queue is full: shed load now rather than answer late (503 with Retry-After)."""

    headers = {"Retry-After": "1"}


class ModelFailed(ServingError):
    """The runtime raised while running a request (or the batch it was in); the message says why."""


class ModelTimedOut(ServingError):
    """The runtime did not answer within the model's inference timeout."""


class PipelineFailed(ModelFailed):
    """A pipeline's stage could not run or refused the previous stage's answer: the composition is
    broken (a stage deleted, demoted or promoted to a version that no longer fits), not the request."""
