"""Domain errors of the registry; built from arguments, free of HTTP (api/errors.py maps them)."""

from __future__ import annotations


class RegistryError(Exception):
    """Base of every error the registry raises on purpose."""


class NotFound(RegistryError):
    """A model, version, alias or token does not exist."""

    def __init__(self, kind: str, name: str, key: object | None = None) -> None:
        self.kind, self.name, self.key = kind, name, key
        if kind == "model":
            what = f"model {name!r} does not exist; create it with POST /admin/models"
        elif kind == "version":
            what = f"model {name!r} has no version {key}; list them with GET /admin/models/{name}/versions"
        elif kind == "alias":
            what = f"model {name!r} has no alias {key!r}"
        elif kind == "token":
            what = f"token {name!r} does not exist; list them with GET /admin/tokens (`modelreg tokens list`)"
        else:
            what = f"{kind} {name!r} {key if key is not None else ''}".strip() + " does not exist"
        super().__init__(what)


class Conflict(RegistryError):
    """The request clashes with the registry's state (duplicate name, nothing to roll back to)."""


class Invalid(RegistryError):
    """The request is malformed or names something unusable (bad name, failed version)."""


class TooLarge(RegistryError):
    """An artifact exceeds the configured size limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"artifact exceeds the limit of {limit} bytes (MODELREG_MAX_ARTIFACT_BYTES)")


class SchemaOutOfDate(RegistryError):
    """The database schema is not at the revision this code needs."""


class NoProductionVersion(Conflict):
    """The model exists but nothing has been promoted yet: the one wording of that answer."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"model {name!r} has no production version yet; promote one with "
                         f"POST /admin/models/{name}/promote, or ask for a version by number")


class Unavailable(RegistryError):
    """The registry database cannot be reached (refused, lost, or no pooled connection to give)."""

    what = "registry database"  # what the server log names as down (the artifact store says its own name)

    def __init__(self, cause: str) -> None:
        self.cause = cause
        super().__init__("the registry database is unavailable; loaded models keep serving, "
                         "registry changes wait until it is back: try again shortly")
