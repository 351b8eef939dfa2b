"""One rule for tests that need what only some hosts allow (root: namespaces, port 53).

On a developer's unprivileged host such a test skips, saying why. Under CI (``CI`` set, as
``.ci/run`` is run) the host is known to be root, so the same reason is a failure: a skip
there would count an untested path as passing.
"""

from __future__ import annotations

import os

import pytest


def require_host(why_not: str | None) -> None:
    """Skip (or, under CI, fail) with ``why_not`` when it is set; return when the host can."""
    if why_not is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI runs as root, yet this host cannot: {why_not}")
    pytest.skip(why_not)
