"""Container paths on a host without mount namespaces.

A container sees its volumes at ``mountPath`` (``/etc/rft``, ``/tmp/rft``,
``/var/run/secrets/...``) and writes its termination message to ``/dev/termination-log``;
none of these can be created on the host's root. Each such path maps to a directory (or
file) of the pod's own directory, and every occurrence of the container path *as a path
prefix* in the command, args, env values and working directory is rewritten to the host
path. "As a path prefix" means: not preceded by a path character and followed by ``/``, the
end, or a character that cannot continue a path segment — so ``/tmp/rft/x`` and
``{"dir": "/tmp/rft"}`` and ``file:///tmp/rft`` are rewritten, ``/tmp/rftx`` and
``/opt/tmp/rft`` are not. Longer
container paths win over shorter ones (nested mounts).

Paths that programs hard-code (not passed through command, args or env) are not rewritten.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

_PATH_CHAR = r"[\w.\-/]"


class PathMapper:
    """Rewrites container paths into host paths for one container."""

    def __init__(self, mapping: Mapping[str, Path]) -> None:
        self._mapping = {self._normalise(k): v for k, v in mapping.items()}
        alternatives = sorted(self._mapping, key=len, reverse=True)
        if alternatives:
            pattern = "|".join(re.escape(a) for a in alternatives)
            # A path prefix: not inside another path, except right after a URL's "://".
            self._regex: re.Pattern[str] | None = re.compile(
                rf"(?:(?<!{_PATH_CHAR})|(?<=://))({pattern})(?=/|$|[^\w.\-])"
            )
        else:
            self._regex = None

    @staticmethod
    def _normalise(path: str) -> str:
        return path.rstrip("/") or "/"

    @property
    def mapping(self) -> dict[str, Path]:
        """Container path -> host path."""
        return dict(self._mapping)

    def rewrite(self, text: str) -> str:
        """``text`` with every container path prefix replaced by its host path."""
        if self._regex is None:
            return text
        return self._regex.sub(lambda m: str(self._mapping[m.group(1)]), text)

    def host_path(self, container_path: str) -> Path | None:
        """The host path of ``container_path`` if it lies under a mapped path, else None."""
        rewritten = self.rewrite(container_path)
        return Path(rewritten) if rewritten != container_path else None
