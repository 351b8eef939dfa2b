"""`ReinforcementStep`: a handle on one training run, with the managed service's polling API."""

from __future__ import annotations

from rft.api.reinforcement_step import TERMINAL_PHASES, StepPhase
from rft.api.reinforcement_step import ReinforcementStep as StepResource
from rft.sdk.errors import RftError
from rft.sdk.names import check_object_name, full_name
from rft.sdk.session import Session
from rft.sdk.validation import check_positive_number
from rft.sdk.waiting import poll_until

BAD_PHASES = frozenset({StepPhase.FAILED, StepPhase.CANCELLED, StepPhase.EXPIRED})
DEFAULT_POLL_INTERVAL = 5.0


class ReinforcementStep:
    """A snapshot of one ReinforcementStep; `get()` fetches a fresh one.

    The loop users write::

        while not step.is_completed:
            step.raise_if_bad_state()
            time.sleep(10)
            step = step.get()
    """

    def __init__(self, resource: StepResource, session: Session) -> None:
        self._resource = resource
        self._session = session

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        namespace: str | None = None,
        kubeconfig: str | None = None,
        session: Session | None = None,
    ) -> ReinforcementStep:
        """Look up an existing step by name; `ResourceNotFoundError` when there is none."""
        check_object_name(name, "name")
        session = session or Session.create(namespace=namespace, kubeconfig=kubeconfig)
        resource = session.client.require(StepResource, session.namespace, name)
        return cls(resource, session)

    @property
    def resource(self) -> StepResource:
        """The underlying API object as last fetched."""
        return self._resource

    @property
    def name(self) -> str:
        """The step's object name."""
        return self._resource.metadata.name

    @property
    def namespace(self) -> str:
        """The step's namespace (account)."""
        return self._resource.metadata.namespace

    @property
    def state(self) -> str:
        """The phase as a `JOB_STATE_*` string; `JOB_STATE_CREATING` until the operator reports."""
        return str(self._resource.status.phase or StepPhase.CREATING)

    @property
    def message(self) -> str:
        """Why the step is where it is (the operator's status message), or ''."""
        return self._resource.status.message or ""

    @property
    def is_completed(self) -> bool:
        """True only when the step COMPLETED (not when it failed, was cancelled or expired)."""
        return self._resource.status.phase == StepPhase.COMPLETED

    @property
    def is_terminal(self) -> bool:
        """True once the step can no longer change (completed or a bad end)."""
        return self._resource.status.phase in TERMINAL_PHASES

    @property
    def output_model(self) -> str:
        """The full name of the checkpoint this step creates: `accounts/<namespace>/models/<name>`."""
        reported = self._resource.status.output_model
        return reported or full_name(self.namespace, "models", self._resource.spec.output_model)

    def get(self) -> ReinforcementStep | None:
        """A fresh copy from the API server, or None when the step was deleted."""
        resource = self._session.client.get(StepResource, self.namespace, self.name)
        return None if resource is None else ReinforcementStep(resource, self._session)

    def raise_if_bad_state(self) -> None:
        """Raise RuntimeError naming the state and the status message if FAILED, CANCELLED or EXPIRED."""
        phase = self._resource.status.phase
        if phase in BAD_PHASES:
            detail = self.message or "no message"
            raise RuntimeError(f"reinforcement step {self.name!r} is in state {phase}: {detail}")

    def cancel(self) -> ReinforcementStep:
        """Cancel the step for good (its Job is deleted; phase CANCELLED). Returns the updated step."""
        resource = self._session.client.patch(
            StepResource, self.namespace, self.name, {"spec": {"cancel": True}}
        )
        self._resource = resource
        return self

    def delete(self) -> bool:
        """Delete the step (and, through the operator, its Job); False when it was already gone."""
        return self._session.client.delete(StepResource, self.namespace, self.name)

    def wait(
        self, timeout: float | None = None, poll_interval: float = DEFAULT_POLL_INTERVAL
    ) -> ReinforcementStep:
        """Poll until the step COMPLETED and return the final snapshot.

        Raises RuntimeError on FAILED/CANCELLED/EXPIRED, RftError if the step is deleted meanwhile,
        and WaitTimeoutError after `timeout` seconds (None: no limit).
        """
        if timeout is not None:
            check_positive_number(timeout, "timeout")
        interval = check_positive_number(poll_interval, "poll_interval")

        def fetch() -> ReinforcementStep:
            fresh = self.get()
            if fresh is None:
                raise RftError(f"reinforcement step {self.name!r} was deleted while waiting for it")
            return fresh

        def done(step: ReinforcementStep) -> bool:
            step.raise_if_bad_state()
            return step.is_completed

        final = poll_until(
            fetch,
            done,
            timeout=timeout,
            interval=interval,
            what=f"reinforcement step {self.name!r} to complete",
            describe=lambda step: f"state {step.state}" + (f" ({step.message})" if step.message else ""),
        )
        self._resource = final.resource
        return final

    def __repr__(self) -> str:
        return f"ReinforcementStep(name={self.name!r}, namespace={self.namespace!r}, state={self.state!r})"
