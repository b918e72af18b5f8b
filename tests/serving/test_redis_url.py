"""MODELREG_REDIS_URL: one server, Sentinel or Cluster; a URL that cannot work says what to change."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from modelreg.serving.redis_client import connect
from modelreg.serving.redis_url import RedisUrlError, parse_redis_url, redacted


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://:pw@cache.example:6380/2", "unix:///tmp/r.sock"])
def test_one_server_urls_go_to_redis_py_unchanged(url: str) -> None:
    target = parse_redis_url(url)
    assert target.topology == "server" and target.url == url


def test_a_sentinel_url_names_the_sentinels_then_the_master() -> None:
    target = parse_redis_url("redis+sentinel://h1:26379,h2:26380,h3/mymaster")
    assert target.topology == "sentinel"
    assert target.hosts == (("h1", 26379), ("h2", 26380), ("h3", 26379))  # no port: the sentinel default
    assert target.service_name == "mymaster" and target.db == 0 and not target.ssl


def test_a_sentinel_url_carries_db_passwords_and_tls() -> None:
    target = parse_redis_url("rediss+sentinel://app:p%40ss@[::1]:26379,h2:26379/cache-master/3"
                             "?sentinel_password=s3cret&sentinel_username=watcher")
    assert target.hosts == (("::1", 26379), ("h2", 26379))
    assert (target.service_name, target.db) == ("cache-master", 3)
    assert (target.username, target.password) == ("app", "p@ss")  # the master's, percent-decoded
    assert (target.sentinel_username, target.sentinel_password) == ("watcher", "s3cret")
    assert target.ssl
    assert parse_redis_url("redis+sentinel://h:1/m?ssl=true").ssl


def test_a_cluster_url_lists_seed_nodes() -> None:
    target = parse_redis_url("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001")
    assert target.topology == "cluster"
    assert target.hosts == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert target.password == "pw" and target.username is None and not target.ssl
    assert parse_redis_url("rediss+cluster://h:7000/0").ssl  # /0 is the only database a Cluster has


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("127.0.0.1:6379", "has no scheme; use one of: redis://"),
        ("memcached://h:11211", "scheme 'memcached' is not known"),
        ("redis+sentinel://h1:26379,h2:26379", "names no master: put the name the sentinels monitor after the hosts"),
        ("redis+sentinel://h1:26379/mymaster/zero", "must be a number (/mymaster/0)"),
        ("redis+sentinel://h1:26379/a/1/x", "the master's name and optionally a database number"),
        ("redis+sentinel://h1:26379,,h2/mymaster", "empty host; list them as host:port separated by commas"),
        ("redis+sentinel://h1:port/mymaster", "a port is a number from 1 to 65535"),
        ("redis+sentinel://h1:70000/mymaster", "a port is a number from 1 to 65535"),
        ("redis+sentinel://h1/m?ssl=maybe", "ssl='maybe' must be true or false"),
        ("redis+sentinel://h1/m?db=2", "option(s) db not understood here; accepted: sentinel_password"),
        ("redis+cluster://h1:7000/2", "a Redis Cluster has only database 0"),
        ("redis+cluster://::1:7000", "write IPv6 addresses in brackets"),
        ("redis+cluster://[::1:7000", "write IPv6 addresses as [::1]:26379"),
    ],
)
def test_a_url_that_cannot_work_says_what_to_fix(url: str, says: str) -> None:
    with pytest.raises(RedisUrlError) as raised:
        parse_redis_url(url)
    assert says in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_errors_and_descriptions_never_show_the_password() -> None:
    with pytest.raises(RedisUrlError) as raised:
        parse_redis_url("redis+cluster://admin:hunter2@h1:7000/5")
    assert "hunter2" not in str(raised.value) and "admin:***@h1:7000" in str(raised.value)
    assert "hunter2" not in parse_redis_url("redis+sentinel://:hunter2@h:1/m").describe()
    assert redacted("redis://:hunter2@h:6379/0") == "redis://:***@h:6379/0"
    assert redacted("redis://h:6379/0") == "redis://h:6379/0"


def test_each_form_makes_its_kind_of_client_without_connecting() -> None:
    asyncio.run(_each_form_makes_its_kind_of_client())


async def _each_form_makes_its_kind_of_client() -> None:
    server = connect("redis://127.0.0.1:1/0", timeout_seconds=0.25)
    sentinel = connect("redis+sentinel://127.0.0.1:1/mymaster/2", timeout_seconds=0.25)
    cluster = connect("redis+cluster://127.0.0.1:1,127.0.0.1:2", timeout_seconds=0.25)
    try:
        assert isinstance(server, aioredis.Redis) and not isinstance(server, RedisCluster)
        assert isinstance(sentinel, aioredis.Redis)
        assert isinstance(sentinel.connection_pool, SentinelConnectionPool)
        assert sentinel.connection_pool.service_name == "mymaster"
        assert sentinel.connection_pool.connection_kwargs["db"] == 2
        assert sentinel.connection_pool.connection_kwargs["socket_timeout"] == 0.25
        assert isinstance(cluster, RedisCluster)
    finally:
        for client in (server, sentinel, cluster):
            await client.aclose()
