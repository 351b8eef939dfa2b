"""What every `rft` command needs: the namespace and a way to read objects from the cluster."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import ParamSpec, Protocol, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from rft.api.common import Resource
from rft.sdk.errors import RftError
from rft.sdk.kube import KubeClient
from rft.sdk.session import Session
from rft.storage import StorageError

R = TypeVar("R", bound=Resource)
P = ParamSpec("P")
T = TypeVar("T")


class ClusterReader(Protocol):
    """Reading the project's objects; `rft.sdk.kube.KubeClient` is the real one."""

    def get(self, kind: type[R], namespace: str, name: str) -> R | None:
        """The object, or None."""
        ...

    def list(self, kind: type[R], namespace: str, label_selector: str | None = None) -> list[R]:
        """All objects of `kind` in `namespace`, sorted by name."""
        ...


@dataclass
class CliContext:
    """The namespace to work in and the reader to use (tests pass a reader of canned objects)."""

    namespace: str
    reader: ClusterReader | None = None
    session: Session | None = None
    console: Console = field(default_factory=Console)

    def cluster(self) -> ClusterReader:
        """The reader: the given one, or the session's Kubernetes client."""
        if self.reader is not None:
            return self.reader
        return self.kube()

    def kube(self) -> KubeClient:
        """The real Kubernetes client (commands that need pods, such as logs)."""
        if self.session is None:
            raise RftError("this command needs a cluster connection (no kubeconfig session)")
        return self.session.client


def cli_context(ctx: typer.Context) -> CliContext:
    """The CliContext the root callback stored."""
    obj = ctx.find_root().obj
    if not isinstance(obj, CliContext):
        raise RftError("internal error: the rft root command did not set up its context")
    return obj


def reports_errors(command: Callable[P, T]) -> Callable[P, T]:
    """Print SDK, argument and storage errors as one red line and exit with status 1."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return command(*args, **kwargs)
        except (RftError, ValueError, LookupError, StorageError, OSError) as error:
            Console(stderr=True).print(Text.assemble(("error: ", "bold red"), str(error)), highlight=False)
            raise typer.Exit(1) from error

    return wrapper
