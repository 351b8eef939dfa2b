"""Storage URLs: parsing, validation, and the check for URLs that would be fetched over HTTP.

Accepted forms: ``s3://bucket/key``, ``gs://bucket/key``, ``file:///abs/path`` and plain local
paths (made absolute). Keys are taken literally: no percent-decoding, no normalisation, so the
key a user writes is the key that is read.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from rft.storage.errors import UnsafeURL

Scheme = Literal["s3", "gs", "file"]

# S3 bucket naming rules (3-63 characters, lowercase, digits, dots, hyphens) and GCS ones (up to
# 222 characters with dots, underscores allowed). Checked here so that a typo fails before any
# request, with a message naming the URL.
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_GCS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._\-]{1,220}[a-z0-9]$")
_MAX_KEY_BYTES = 1024
# The cloud metadata endpoints: never a legitimate target for a user-supplied URL.
_METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


@dataclass(frozen=True)
class Location:
    """A parsed storage URL. For ``file`` locations, ``bucket`` is empty and ``key`` is the absolute path."""

    scheme: Scheme
    bucket: str
    key: str

    @property
    def url(self) -> str:
        """The canonical URL: ``s3://bucket/key``, ``gs://bucket/key`` or ``file:///abs/path``."""
        if self.scheme == "file":
            return f"file://{self.key}"
        return f"{self.scheme}://{self.bucket}/{self.key}"

    @property
    def is_local(self) -> bool:
        """True for ``file`` locations (local paths), which only development clusters use."""
        return self.scheme == "file"

    @property
    def name(self) -> str:
        """The last path segment of the key ('' for a prefix ending in '/')."""
        return self.key.rsplit("/", 1)[-1]

    def as_prefix(self) -> Location:
        """This location with a trailing '/', so that listing it never matches a sibling."""
        if not self.key or self.key.endswith("/"):
            return self
        return Location(self.scheme, self.bucket, self.key + "/")

    def join(self, *parts: str) -> Location:
        """Append relative path segments; refuses '..', '.', empty and absolute segments."""
        segments: list[str] = []
        for part in parts:
            for segment in part.split("/"):
                if segment in ("", ".", ".."):
                    raise UnsafeURL(
                        f"cannot join {part!r} to {self.url}: path segments must be non-empty and "
                        "must not be '.' or '..'"
                    )
                segments.append(segment)
        base = self.key.rstrip("/")
        joined = "/".join(segments)
        key = f"{base}/{joined}" if base or self.scheme == "file" else joined
        return Location(self.scheme, self.bucket, key)


def parse_url(url: str) -> Location:
    """Parse a storage URL or a local path into a :class:`Location`.

    Raises :class:`UnsafeURL` for an unknown scheme, a missing or invalid bucket name, or a
    ``file://`` URL naming a remote host.
    """
    if not isinstance(url, str) or not url:
        raise UnsafeURL(f"storage URL must be a non-empty string, got {url!r}")
    if "://" not in url:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", url) and not os.path.exists(url):
            raise UnsafeURL(f"{url!r}: unknown scheme; use s3://, gs://, file:// or a local path")
        return Location("file", "", os.path.abspath(url))
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme == "file":
        host, slash, path = rest.partition("/")
        if host not in ("", "localhost"):
            raise UnsafeURL(
                f"{url!r}: file:// URLs must name a local path (file:///abs/path), not host {host!r}"
            )
        if not slash:
            raise UnsafeURL(f"{url!r}: file:// URLs need an absolute path (file:///abs/path)")
        return Location("file", "", os.path.normpath("/" + path) + ("/" if path.endswith("/") else ""))
    if scheme in ("s3", "gs"):
        bucket, _, key = rest.partition("/")
        pattern = _S3_BUCKET if scheme == "s3" else _GCS_BUCKET
        if not pattern.match(bucket):
            raise UnsafeURL(
                f"{url!r}: {bucket!r} is not a valid {scheme.upper()} bucket name "
                "(lowercase letters, digits, '.', '-'; 3 to 63 characters for S3)"
            )
        return Location("s3" if scheme == "s3" else "gs", bucket, key)
    raise UnsafeURL(f"{url!r}: unknown scheme {scheme!r}; use s3://, gs://, file:// or a local path")


def check_url(url: str, *, allow_local: bool = True, require_key: bool = False) -> Location:
    """Validate a user-supplied storage URL and return its :class:`Location`.

    Beyond :func:`parse_url`: refuses control characters and whitespace, keys over 1024 bytes,
    empty or '..' path segments in keys, local paths when ``allow_local`` is false (real clusters
    read only buckets), and a missing key when ``require_key`` is true.
    """
    if any(ord(c) < 0x20 or c == "\x7f" for c in url) or url != url.strip():
        raise UnsafeURL(f"{url!r}: storage URLs must not contain control characters or surrounding spaces")
    location = parse_url(url)
    if location.is_local and not allow_local:
        raise UnsafeURL(f"{url!r}: local paths are for development only; use s3:// or gs://")
    if len(location.key.encode()) > _MAX_KEY_BYTES:
        raise UnsafeURL(f"{url!r}: key is longer than {_MAX_KEY_BYTES} bytes")
    if not location.is_local:
        inner = location.key.rstrip("/").split("/") if location.key else []
        if any(segment in ("", ".", "..") for segment in inner):
            raise UnsafeURL(f"{url!r}: key has an empty, '.' or '..' path segment")
    if require_key and not location.key.strip("/"):
        raise UnsafeURL(f"{url!r}: names a whole bucket; a key (object or prefix) is required")
    return location


Resolver = Callable[..., Sequence[tuple[Any, ...]]]


def check_http_url(
    url: str,
    *,
    allow_loopback: bool = False,
    resolver: Resolver = socket.getaddrinfo,
) -> list[str]:
    """Check a URL that would be fetched over HTTP(S) and return the addresses its host resolves to.

    Refuses plain ``http://`` (unless ``allow_loopback`` and the host is a loopback address),
    URLs with credentials, and any host that resolves to a loopback, private, link-local,
    shared (CGNAT), multicast, reserved or unspecified address, in particular the cloud metadata
    endpoints 169.254.169.254 and fd00:ec2::254. Connect to one of the returned addresses rather
    than resolving again, or a rebinding DNS server can answer differently the second time.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeURL(f"{url!r}: only https:// URLs may be fetched, not {scheme or 'no scheme'!r}")
    if parts.username or parts.password:
        raise UnsafeURL(f"{url!r}: credentials in URLs are refused")
    host = parts.hostname
    if not host:
        raise UnsafeURL(f"{url!r}: no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeURL(f"{url!r}: invalid port") from exc
    try:
        infos = resolver(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UnsafeURL(f"{url!r}: cannot resolve host {host!r}: {exc}") from exc
    addresses = sorted({str(info[4][0]).split("%", 1)[0] for info in infos})
    if not addresses:
        raise UnsafeURL(f"{url!r}: host {host!r} resolves to no address")
    for text in addresses:
        address = ipaddress.ip_address(text)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address in _METADATA_ADDRESSES:
            raise UnsafeURL(f"{url!r}: host {host!r} resolves to the cloud metadata address {address}")
        if address.is_loopback and allow_loopback:
            continue
        if not address.is_global or address.is_multicast:
            raise UnsafeURL(
                f"{url!r}: host {host!r} resolves to {address}, a loopback, private, link-local or "
                "reserved address"
            )
    if scheme == "http" and not (
        allow_loopback and all(ipaddress.ip_address(a).is_loopback for a in addresses)
    ):
        raise UnsafeURL(f"{url!r}: plain http:// is refused; use https://")
    return addresses
