"""A container image's "pull" on the local node, failing and retrying the way the kubelet's does.

Pulling here means finding the image's stand-in (images.runtime_for): instant for most images,
an install for a vLLM image seen for the first time, so it runs in a thread of its own and the
pod's worker stays free to notice a deletion. When it fails the container waits, and the pod
stays Pending, never Failed: a ReplicaSet would replace a failed pod at once, forever (one
Deployment with an unsupported image made 254 pods in 4 minutes), while a waiting pod just
waits, as on a real node. The container's waiting reason is ``ErrImagePull`` right after an
attempt, then ``ImagePullBackOff`` until the next one; attempts are spaced by a back-off that
starts at ``backoff_initial`` and doubles up to ``backoff_max`` (kubelet: 10 s to 5 min).
ErrImagePull is shown for ``backoff_initial`` after each failed attempt, mirroring the kubelet,
whose pod worker syncs a pod whose sync failed again after 10 s (its initial image back-off).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from rft_devcluster.localnode.images import ImagePullError, ImageRuntime, runtime_for

log = logging.getLogger(__name__)


class ImagePull:
    """One image's pull for one pod: call :meth:`poll` each tick until :attr:`runtime` is set."""

    def __init__(
        self,
        image: str,
        backoff_initial: float,
        backoff_max: float,
        resolve: Callable[[str], ImageRuntime] = runtime_for,
        owner: str = "",
    ) -> None:
        self.image = image
        self._owner = owner  # the pod, for the log
        self.runtime: ImageRuntime | None = None
        self.error = ""  # why the last attempt failed
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._resolve = resolve
        self._backoff = 0.0
        self._failed_at = 0.0
        self._retry_at = 0.0
        self._thread: threading.Thread | None = None
        self._outcome: ImageRuntime | ImagePullError | None = None

    @property
    def pulling(self) -> bool:
        """Whether an attempt runs now."""
        return self._thread is not None and self._thread.is_alive()

    def poll(self, now: float) -> None:
        """Collect a finished attempt; start the next one when none runs and the back-off is over."""
        if self.runtime is not None:
            return
        if self._thread is not None:
            if self._thread.is_alive():
                return
            self._thread = None
            outcome, self._outcome = self._outcome, None
            if isinstance(outcome, ImageRuntime):
                self.runtime = outcome
                return
            self.error = str(outcome)
            self._backoff = (
                self._backoff_initial if self._backoff == 0 else min(self._backoff * 2, self._backoff_max)
            )
            self._failed_at = now
            self._retry_at = now + self._backoff
            log.info(
                "pod %s: image %s not available (retry in %.0fs): %s",
                self._owner,
                self.image,
                self._backoff,
                self.error,
            )
        if now >= self._retry_at:
            self._thread = threading.Thread(target=self._attempt, name=f"pull-{self.image}", daemon=True)
            self._thread.start()

    def _attempt(self) -> None:
        # Runs on after the pod is deleted if need be (an install finishes for the next pod).
        try:
            self._outcome = self._resolve(self.image)
        except ImagePullError as exc:
            self._outcome = exc
        except Exception as exc:  # a bug or an OS error: a failed pull all the same, retried
            self._outcome = ImagePullError(f"{type(exc).__name__}: {exc}")

    def waiting(self, now: float) -> tuple[str, str]:
        """The container's waiting reason and message while the image is not there yet."""
        if not self.error:
            return "ContainerCreating", ""  # the first attempt runs (the kubelet says so while pulling)
        if now - self._failed_at < self._backoff_initial:
            return "ErrImagePull", self.error
        return "ImagePullBackOff", f'Back-off pulling image "{self.image}": ErrImagePull: {self.error}'
