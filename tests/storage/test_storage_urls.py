"""Storage URL parsing, validation, and the check for URLs fetched over HTTP."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
from rft.storage import Location, UnsafeURL, check_http_url, check_url, parse_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://my-bucket/datasets/a.jsonl", Location("s3", "my-bucket", "datasets/a.jsonl")),
        ("s3://my-bucket", Location("s3", "my-bucket", "")),
        ("s3://my.bucket/prefix/", Location("s3", "my.bucket", "prefix/")),
        ("gs://my_bucket/x/y", Location("gs", "my_bucket", "x/y")),
        ("file:///data/models/m", Location("file", "", "/data/models/m")),
        ("file:///data/models/m/", Location("file", "", "/data/models/m/")),
        ("file://localhost/data/x", Location("file", "", "/data/x")),
        ("/abs/path.jsonl", Location("file", "", "/abs/path.jsonl")),
    ],
)
def test_parse_url(url: str, expected: Location) -> None:
    assert parse_url(url) == expected


def test_relative_paths_become_absolute() -> None:
    assert parse_url("data/x.jsonl") == Location("file", "", os.path.join(os.getcwd(), "data/x.jsonl"))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com/x", "unknown scheme 'http'"),
        ("s3a://bucket/key", "unknown scheme 's3a'"),
        ("az://container/blob", "unknown scheme 'az'"),
        ("s3://Bad_Bucket/key", "not a valid S3 bucket name"),
        ("s3:///key", "not a valid S3 bucket name"),
        ("gs://x/key", "not a valid GS bucket name"),
        ("file://remote-host/etc/passwd", "not host 'remote-host'"),
        ("", "non-empty"),
    ],
)
def test_parse_url_refuses(url: str, reason: str) -> None:
    with pytest.raises(UnsafeURL, match=reason):
        parse_url(url)


def test_location_url_and_join() -> None:
    base = parse_url("s3://bucket/ns/models")
    assert base.join("m1", "adapter/config.json").url == "s3://bucket/ns/models/m1/adapter/config.json"
    assert parse_url("s3://bucket").join("a").url == "s3://bucket/a"
    assert parse_url("file:///tmp/x/").join("y").url == "file:///tmp/x/y"
    assert parse_url("gs://bucket/p").as_prefix().url == "gs://bucket/p/"
    for bad in ("..", "a/../b", "/abs", "a//b", "."):
        with pytest.raises(UnsafeURL, match="path segments"):
            base.join(bad)


@pytest.mark.parametrize(
    ("url", "kwargs", "reason"),
    [
        ("s3://bucket/a\nb", {}, "control characters"),
        (" s3://bucket/a", {}, "surrounding spaces"),
        ("s3://bucket/" + "k" * 1025, {}, "longer than 1024 bytes"),
        ("s3://bucket/a/../b", {}, "'..'"),
        ("s3://bucket/a//b", {}, "empty"),
        ("file:///tmp/x", {"allow_local": False}, "development only"),
        ("s3://bucket", {"require_key": True}, "whole bucket"),
        ("s3://bucket/", {"require_key": True}, "whole bucket"),
    ],
)
def test_check_url_refuses(url: str, kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(UnsafeURL, match=reason):
        check_url(url, **kwargs)


def test_check_url_accepts() -> None:
    assert check_url("s3://bucket/prefix/", require_key=True).key == "prefix/"
    assert check_url("gs://bucket/a/b.jsonl", allow_local=False).bucket == "bucket"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("https://169.254.169.254/", "cloud metadata"),
        ("https://[fd00:ec2::254]/", "cloud metadata"),
        ("https://[::ffff:169.254.169.254]/", "cloud metadata"),
        ("https://10.0.0.8/x", "private"),
        ("https://192.168.1.1/x", "private"),
        ("https://172.16.5.4/x", "private"),
        ("https://100.64.0.1/x", "private"),  # shared address space (carrier-grade NAT)
        ("https://169.254.10.10/x", "link-local"),
        ("https://127.0.0.1/x", "loopback"),
        ("https://[::1]/x", "loopback"),
        ("https://0.0.0.0/x", "reserved"),
        ("https://localhost/x", "loopback"),
        ("https://user:pw@93.184.216.34/x", "credentials"),
        ("http://93.184.216.34/x", "plain http"),
        ("ftp://93.184.216.34/x", "only https"),
        ("https:///x", "no host"),
    ],
)
def test_check_http_url_refuses(url: str, reason: str) -> None:
    with pytest.raises(UnsafeURL, match=reason):
        check_http_url(url)


def test_check_http_url_accepts_public_https_and_returns_addresses() -> None:
    assert check_http_url("https://93.184.216.34:8443/path") == ["93.184.216.34"]


def test_loopback_only_when_allowed() -> None:
    assert check_http_url("http://127.0.0.1:8000/v1", allow_loopback=True) == ["127.0.0.1"]
    with pytest.raises(UnsafeURL, match="private"):
        check_http_url("http://10.1.2.3/v1", allow_loopback=True)
    with pytest.raises(UnsafeURL, match="cloud metadata"):
        check_http_url("http://169.254.169.254/", allow_loopback=True)


def test_every_resolved_address_is_checked() -> None:
    """A name resolving to one public and one private address is refused (DNS rebinding)."""

    def resolver(host: str, port: int, **_kwargs: Any) -> list[tuple[Any, ...]]:
        assert host == "mixed.example"
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port)),
        ]

    with pytest.raises(UnsafeURL, match=r"10\.0\.0\.1"):
        check_http_url("https://mixed.example/", resolver=resolver)


def test_unresolvable_host_is_refused() -> None:
    def resolver(host: str, port: int, **_kwargs: Any) -> list[tuple[Any, ...]]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(UnsafeURL, match=r"cannot resolve host 'nowhere\.invalid'"):
        check_http_url("https://nowhere.invalid/", resolver=resolver)
