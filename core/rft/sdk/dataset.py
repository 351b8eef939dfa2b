"""`Dataset`: rows with rewards, synced to the user's bucket and validated by the operator.

In-memory datasets (`from_list`, `from_string`, `from_file`) are named after their content, so
`sync()` is idempotent: it uploads `<bucket>/datasets/<id>.jsonl` create-only (skipping an upload
that is already there), creates the Dataset object and waits for validation. `from_url` points
at an object already in the user's bucket (read in place, never copied); `from_id` opens an
existing Dataset.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rft import storage
from rft.api.dataset import Dataset as DatasetResource
from rft.api.reinforcement_step import TERMINAL_PHASES
from rft.api.reinforcement_step import ReinforcementStep as StepResource
from rft.sdk.errors import DatasetValidationError, ResourceExistsError, ResourceNotFoundError, RftError
from rft.sdk.jsonl import Row, canonical_jsonl, content_id, number_rows, parse_jsonl
from rft.sdk.manifests import dataset_body
from rft.sdk.names import ResourceName, check_object_name, resolve_name
from rft.sdk.row_check import check_dataset, check_rows
from rft.sdk.session import Session
from rft.sdk.validation import check_bool, check_int, check_positive_number
from rft.sdk.waiting import poll_until

DEFAULT_SYNC_TIMEOUT = 600.0
DEFAULT_POLL_INTERVAL = 1.0
MAX_ERRORS_SHOWN = 10


class Dataset:
    """A dataset of prompt groups with rewards; build one with the `from_*` class methods."""

    def __init__(
        self,
        dataset_id: str,
        session: Session,
        *,
        content: bytes | None = None,
        rows: list[Row] | None = None,
        source: str | None = None,
        resource: DatasetResource | None = None,
    ) -> None:
        self._id = check_object_name(dataset_id, "id")
        self._session = session
        self._content = content
        self._rows = rows
        self._source = source
        self._resource = resource

    # Constructors ------------------------------------------------------------------------------

    @classmethod
    def from_list(
        cls,
        rows: Iterable[Mapping[str, Any]],
        *,
        namespace: str | None = None,
        bucket: str | None = None,
        service_account: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        session: Session | None = None,
    ) -> Dataset:
        """A dataset of `rows` (dicts), checked locally.

        Settings (namespace, bucket, service_account, kubeconfig, context) default as described
        in `rft.sdk.config`; every constructor takes them.
        """
        if isinstance(rows, str | bytes | Mapping):
            raise TypeError("rows: expected a list of row dicts (use from_string for JSONL text)")
        return cls._from_numbered(
            number_rows(rows), _session(session, namespace, bucket, service_account, kubeconfig, context)
        )

    @classmethod
    def from_string(
        cls,
        jsonl: str,
        *,
        namespace: str | None = None,
        bucket: str | None = None,
        service_account: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        session: Session | None = None,
    ) -> Dataset:
        """A dataset from JSONL text (one JSON object per line; blank lines are skipped)."""
        if not isinstance(jsonl, str):
            raise TypeError(f"jsonl: expected a string, got {type(jsonl).__name__}")
        return cls._from_numbered(
            parse_jsonl(jsonl), _session(session, namespace, bucket, service_account, kubeconfig, context)
        )

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        namespace: str | None = None,
        bucket: str | None = None,
        service_account: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        session: Session | None = None,
    ) -> Dataset:
        """A dataset from a local JSONL file."""
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"path: no such file {str(file)!r}")
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise DatasetValidationError(f"path: {str(file)!r} is not UTF-8 text: {error}") from error
        return cls._from_numbered(
            parse_jsonl(text), _session(session, namespace, bucket, service_account, kubeconfig, context)
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        id: str | None = None,  # noqa: A002 - the managed service's argument name
        namespace: str | None = None,
        bucket: str | None = None,
        service_account: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        session: Session | None = None,
    ) -> Dataset:
        """A dataset over an object already in your bucket (`s3://...`, `gs://...`), never copied.

        Its id is `id`, or derived from the URL. The object is read only by the validation Job
        (and by `head`/iteration here, with your own credentials).
        """
        if not isinstance(url, str):
            raise TypeError(f"url: expected a string, got {type(url).__name__}")
        try:
            storage.check_url(url)
        except storage.StorageError as error:
            raise ValueError(f"url: {error}") from error
        dataset_id = id if id is not None else content_id(url.encode("utf-8"))
        return cls(
            dataset_id, _session(session, namespace, bucket, service_account, kubeconfig, context), source=url
        )

    @classmethod
    def from_id(
        cls,
        id: str,  # noqa: A002 - the managed service's argument name
        *,
        namespace: str | None = None,
        bucket: str | None = None,
        service_account: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        session: Session | None = None,
    ) -> Dataset:
        """An existing Dataset: `<id>` or `accounts/<namespace>/datasets/<id>`."""
        session = _session(session, namespace, bucket, service_account, kubeconfig, context)
        name = resolve_name(id, "datasets", session.namespace, "id")
        session = session.for_namespace(name.namespace)
        resource = session.client.require(DatasetResource, name.namespace, name.name)
        return cls(name.name, session, source=resource.spec.source, resource=resource)

    @classmethod
    def _from_numbered(cls, numbered: list[tuple[int, Row]], session: Session) -> Dataset:
        check_rows(numbered)
        rows = [row for _, row in numbered]
        content = canonical_jsonl(rows)
        return cls(content_id(content), session, content=content, rows=rows)

    # Names -----------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The Dataset object's name (content-addressed for in-memory datasets)."""
        return self._id

    @property
    def namespace(self) -> str:
        """The namespace (account) the dataset lives in."""
        return self._session.namespace

    @property
    def name(self) -> str:
        """`accounts/<namespace>/datasets/<id>`."""
        return ResourceName(self.namespace, "datasets", self._id).full

    @property
    def url(self) -> str | None:
        """Where the rows live (None for an in-memory dataset not synced yet)."""
        return self._source

    @property
    def resource(self) -> DatasetResource | None:
        """The Dataset object as last fetched or created (None before `sync()`)."""
        return self._resource

    # Rows ------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Row]:
        if self._rows is not None:
            return iter(self._rows)
        return self._stream_rows()

    def __len__(self) -> int:
        if self._rows is not None:
            return len(self._rows)
        return sum(1 for _ in self._stream_rows())

    def head(self, n: int = 5) -> list[Row]:
        """The first `n` rows."""
        check_int(n, "n", minimum=0, maximum=2**31)
        return list(itertools.islice(iter(self), n))

    def _stream_rows(self) -> Iterator[Row]:
        source = self._readable_source()
        for number, line in enumerate(storage.iter_lines(source), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as error:
                raise DatasetValidationError(f"{source}: line {number}: invalid JSON: {error}") from error
            if not isinstance(value, dict):
                raise DatasetValidationError(f"{source}: line {number}: expected a JSON object")
            yield value

    def _readable_source(self) -> str:
        if self._resource is not None and self._resource.status.resolved_source:
            return self._resource.status.resolved_source
        if self._source is None:
            raise RftError(f"dataset {self._id}: no rows in memory and no source URL")
        return self._source

    # Cluster ---------------------------------------------------------------------------------

    def get(self) -> DatasetResource | None:
        """The Dataset object as the cluster has it now, or None."""
        self._resource = self._session.client.get(DatasetResource, self.namespace, self._id)
        return self._resource

    def sync(self, wait: bool = True, timeout: float | None = DEFAULT_SYNC_TIMEOUT) -> Dataset:
        """Upload (if needed), create the Dataset object (if needed) and wait until it is READY.

        Idempotent. Raises DatasetValidationError with the validation's line-numbered errors when
        the dataset is FAILED, ValueError when no bucket is configured for an upload.
        """
        check_bool(wait, "wait")
        if timeout is not None:
            check_positive_number(timeout, "timeout")
        client = self._session.client
        existing = client.get(DatasetResource, self.namespace, self._id)
        if existing is None:
            existing = self._create()
        elif self._content is None and self._source is not None and existing.spec.source != self._source:
            raise ResourceExistsError(
                f"id: dataset {self.name} already exists with source {existing.spec.source}, not {self._source}"
            )
        self._resource = existing
        self._source = existing.spec.source
        if wait:
            self._resource = self.wait_ready(timeout)
        return self

    def _create(self) -> DatasetResource:
        config = self._session.config
        managed = self._content is not None
        if self._content is not None:
            check_dataset(self._content)
            url = f"{config.require_bucket()}/datasets/{self._id}.jsonl"
            _upload_once(url, self._content)
            self._source = url
        elif self._source is None:
            raise ResourceNotFoundError(f"dataset {self.name} does not exist")
        body = dataset_body(
            self.namespace,
            self._id,
            source=self._source,
            service_account=config.service_account,
            managed_by_sdk=managed,
        )
        try:
            return self._session.client.create(DatasetResource, body)
        except ResourceExistsError:
            return self._session.client.require(DatasetResource, self.namespace, self._id)

    def wait_ready(self, timeout: float | None = DEFAULT_SYNC_TIMEOUT) -> DatasetResource:
        """Poll until validation is done: return the READY object or raise with its errors."""

        def fetch() -> DatasetResource:
            found = self._session.client.get(DatasetResource, self.namespace, self._id)
            if found is None:
                raise ResourceNotFoundError(f"dataset {self.name} was deleted while waiting for validation")
            return found

        def done(resource: DatasetResource) -> bool:
            if resource.status.phase == "FAILED":
                raise DatasetValidationError(validation_failure_message(resource))
            return resource.status.phase == "READY"

        return poll_until(
            fetch,
            done,
            timeout=timeout,
            interval=DEFAULT_POLL_INTERVAL,
            what=f"dataset {self.name} to be validated",
            describe=lambda r: f"phase {r.status.phase or 'not reported yet'}",
        )

    def delete(self, ignore_checks: bool = False) -> bool:
        """Delete the Dataset object, and the uploaded object if the SDK uploaded it.

        A no-op (False) when the Dataset does not exist. Refuses while an unfinished
        ReinforcementStep uses the dataset, unless `ignore_checks`.
        """
        check_bool(ignore_checks, "ignore_checks")
        client = self._session.client
        resource = client.get(DatasetResource, self.namespace, self._id)
        if resource is None:
            return False
        if not ignore_checks:
            users = [
                step.metadata.name
                for step in client.list(StepResource, self.namespace)
                if step.spec.dataset == self._id and step.status.phase not in TERMINAL_PHASES
            ]
            if users:
                raise RftError(
                    f"dataset {self.name} is used by unfinished reinforcement step(s) {', '.join(users)}; "
                    "wait for them, cancel them, or pass ignore_checks=True"
                )
        if resource.spec.managed_by_sdk:
            storage.delete(resource.spec.source)
        deleted = client.delete(DatasetResource, self.namespace, self._id)
        self._resource = None
        return deleted

    def __repr__(self) -> str:
        return f"Dataset(id={self._id!r}, namespace={self.namespace!r}, url={self._source!r})"


def validation_failure_message(resource: DatasetResource) -> str:
    """Why validation failed: the status errors with their line numbers, or the Ready condition's message."""
    status = resource.status
    parts = [f"line {error.line}: {error.message}" for error in status.errors[:MAX_ERRORS_SHOWN]]
    if len(status.errors) > MAX_ERRORS_SHOWN:
        parts.append(f"... and {len(status.errors) - MAX_ERRORS_SHOWN} more")
    if not parts:
        messages = [c.message for c in status.conditions if c.status == "False" and c.message]
        parts = messages or ["no details reported"]
    return f"dataset {resource.metadata.name!r} failed validation: " + "; ".join(parts)


def _upload_once(url: str, content: bytes) -> None:
    """Create the object unless it is already there (content-addressed: same name, same bytes)."""
    if storage.exists(url):
        return
    try:
        storage.create_bytes(url, content)
    except storage.AlreadyExists:
        return


def _session(
    session: Session | None,
    namespace: str | None,
    bucket: str | None,
    service_account: str | None,
    kubeconfig: str | None,
    context: str | None,
) -> Session:
    if session is None:
        return Session.create(
            namespace=namespace,
            bucket=bucket,
            service_account=service_account,
            kubeconfig=kubeconfig,
            context=context,
        )
    if not isinstance(session, Session):
        raise TypeError(f"session: expected a Session, got {type(session).__name__}")
    given = {
        "namespace": namespace,
        "bucket": bucket,
        "service_account": service_account,
        "kubeconfig": kubeconfig,
        "context": context,
    }
    for key, value in given.items():
        if value is not None:
            raise TypeError(f"{key}: not accepted together with session= (the session carries it)")
    return session
