"""What ``MODELREG_REDIS_URL`` names: one server, a Sentinel-watched master, or a Cluster.

Pure parsing (no I/O); ``redis_client.connect`` turns the result into a client. Accepted forms:

- ``redis://[user:password@]host[:port][/db]``, ``rediss://...`` (TLS), ``unix:///path.sock``: one
  server, handed to redis-py's own ``from_url`` unchanged (so every query option it knows works).
- ``redis+sentinel://[user:password@]h1:26379,h2:26379/mymaster[/db]`` (``rediss+sentinel://``:
  TLS to the master): the sentinels to ask, then the master's name. The user and password are the
  master's; the sentinels' own ones go in ``?sentinel_username=&sentinel_password=``. A host
  without a port means 26379.
- ``redis+cluster://[user:password@]h1:7000,h2:7001`` (``rediss+cluster://``: TLS): any reachable
  nodes of the Cluster (it finds the others); a Cluster has only database 0. A host without a port
  means 6379.

Errors name what to fix and never repeat the password.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, unquote

Topology = Literal["server", "sentinel", "cluster"]

_SINGLE_SCHEMES = frozenset({"redis", "rediss", "unix"})
_SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
_CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
_SENTINEL_OPTIONS = frozenset({"sentinel_username", "sentinel_password", "ssl"})
_CLUSTER_OPTIONS = frozenset({"ssl"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_FORMS = ("redis://host:6379/0, rediss://host:6380/0, redis+sentinel://h1:26379,h2:26379/mymaster "
          "or redis+cluster://h1:7000,h2:7001")


class RedisUrlError(ValueError):
    """``MODELREG_REDIS_URL`` cannot be used as it is; the message says what to change."""


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL: which topology, where, and how to authenticate."""

    topology: Topology
    url: str  # as given: a one-server URL goes to redis-py's from_url unchanged
    hosts: tuple[tuple[str, int], ...] = ()  # sentinels or cluster seed nodes
    service_name: str | None = None  # the master's name (Sentinel)
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    def describe(self) -> str:
        """Where it points, for logs: never the password."""
        if self.topology == "server":
            return redacted(self.url)
        hosts = ",".join(_join_host(h, p) for h, p in self.hosts)
        if self.topology == "sentinel":
            return f"Sentinel {hosts} master {self.service_name!r} db {self.db}"
        return f"Cluster {hosts}"


def redacted(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{hosts}{slash}{tail}"


def parse_redis_url(url: str) -> RedisTarget:
    """The topology and addresses ``url`` names, or ``RedisUrlError`` saying what to fix."""
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or not scheme:
        raise RedisUrlError(f"MODELREG_REDIS_URL {redacted(text)!r} has no scheme; use one of: {_FORMS}")
    if scheme in _SINGLE_SCHEMES:
        return RedisTarget(topology="server", url=text)
    if scheme in _SENTINEL_SCHEMES:
        return _sentinel(text, rest, tls=_SENTINEL_SCHEMES[scheme])
    if scheme in _CLUSTER_SCHEMES:
        return _cluster(text, rest, tls=_CLUSTER_SCHEMES[scheme])
    raise RedisUrlError(f"MODELREG_REDIS_URL scheme {scheme!r} is not known; use one of: {_FORMS}")


def _sentinel(url: str, rest: str, *, tls: bool) -> RedisTarget:
    where = f"MODELREG_REDIS_URL {redacted(url)!r}"
    authority, path, options = _split(rest)
    username, password, hosts = _authority(authority, where, default_port=26379)
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts:
        raise RedisUrlError(f"{where} names no master: put the name the sentinels monitor after the hosts, "
                            "e.g. redis+sentinel://h1:26379,h2:26379/mymaster")
    if len(parts) > 2:
        raise RedisUrlError(f"{where}: after the hosts come the master's name and optionally a database number "
                            "(/mymaster or /mymaster/2), nothing more")
    db = _db(parts[1], where) if len(parts) == 2 else 0
    query = _options(options, _SENTINEL_OPTIONS, where)
    return RedisTarget(topology="sentinel", url=url, hosts=hosts, service_name=parts[0], db=db,
                       username=username, password=password, ssl=_flag(query, "ssl", tls, where),
                       sentinel_username=query.get("sentinel_username") or None,
                       sentinel_password=query.get("sentinel_password") or None)


def _cluster(url: str, rest: str, *, tls: bool) -> RedisTarget:
    where = f"MODELREG_REDIS_URL {redacted(url)!r}"
    authority, path, options = _split(rest)
    username, password, hosts = _authority(authority, where, default_port=6379)
    parts = [p for p in path.split("/") if p]
    if parts and parts != ["0"]:
        raise RedisUrlError(f"{where}: a Redis Cluster has only database 0; drop the path after the hosts")
    query = _options(options, _CLUSTER_OPTIONS, where)
    return RedisTarget(topology="cluster", url=url, hosts=hosts, username=username, password=password,
                       ssl=_flag(query, "ssl", tls, where))


def _split(rest: str) -> tuple[str, str, str]:
    """authority, path, query of what follows ``scheme://`` (a fragment is not allowed anywhere)."""
    rest, _, options = rest.partition("?")
    authority, slash, path = rest.partition("/")
    return authority, slash + path, options


def _authority(authority: str, where: str, *, default_port: int) -> tuple[str | None, str | None,
                                                                          tuple[tuple[str, int], ...]]:
    userinfo, at, host_list = authority.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None  # as redis-py reads redis://user@host: a user, no password
    hosts = tuple(_host(item.strip(), where, default_port) for item in host_list.split(","))
    return username, password, hosts


def _host(item: str, where: str, default_port: int) -> tuple[str, int]:
    if not item:
        raise RedisUrlError(f"{where} has an empty host; list them as host:port separated by commas, "
                            "e.g. h1:26379,h2:26379")
    if item.startswith("["):  # [IPv6]:port
        host, bracket, tail = item[1:].partition("]")
        if not bracket or not host or (tail and not tail.startswith(":")):
            raise RedisUrlError(f"{where}: {item!r} is not a host; write IPv6 addresses as [::1]:26379")
        port_text = tail[1:]
    else:
        host, _, port_text = item.partition(":")
        if ":" in port_text:
            raise RedisUrlError(f"{where}: {item!r} is not host:port; write IPv6 addresses in brackets, [::1]:7000")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RedisUrlError(f"{where}: {item!r} has port {port_text!r}; a port is a number from 1 to 65535")
    return host, int(port_text)


def _db(text: str, where: str) -> int:
    if not text.isdigit():
        raise RedisUrlError(f"{where}: the database after the master's name must be a number (/mymaster/0), "
                            f"not {text!r}")
    return int(text)


def _options(query: str, allowed: frozenset[str], where: str) -> dict[str, str]:
    found = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(found) - allowed)
    if unknown:
        raise RedisUrlError(f"{where}: option(s) {', '.join(unknown)} not understood here; "
                            f"accepted: {', '.join(sorted(allowed))}")
    return found


def _flag(query: dict[str, str], name: str, default: bool, where: str) -> bool:
    value = query.get(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise RedisUrlError(f"{where}: {name}={value!r} must be true or false")


def _join_host(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
