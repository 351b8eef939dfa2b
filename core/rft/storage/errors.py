"""Errors of the storage layer. Every message names the URL and what failed.

The names (without an "Error" suffix) are part of the interface other components code against.
"""

from __future__ import annotations


class StorageError(Exception):
    """A storage operation failed; the message names the URL and the reason."""


class AlreadyExists(StorageError):  # noqa: N818
    """A create-only write found an object already there: nothing was overwritten."""


class NotFound(StorageError):  # noqa: N818
    """The object (or the bucket) does not exist."""


class AccessDenied(StorageError):  # noqa: N818
    """The credentials were accepted but lack a permission on the object or bucket."""


class CredentialsError(StorageError):
    """No usable credentials: web identity, pod identity or application default credentials failed."""


class DigestMismatch(StorageError):  # noqa: N818
    """An object's content does not match the digest recorded for it."""


class UnsafeURL(StorageError):  # noqa: N818
    """The URL has an unknown scheme or points at an address that must not be fetched."""
