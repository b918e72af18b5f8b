"""The ``modelreg`` command line: server and database commands here, everything else over HTTP."""

from modelreg.api.cli.commands import app

__all__ = ["app"]
