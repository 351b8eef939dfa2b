"""kwok Stages: how pods on the fake GPU nodes move through their lifecycle.

kwok replaces its built-in pod stages with the ones in its ``--config`` file, so this file
holds kwok's "fast" stages (every pod Running at once; Job-owned pods Succeeded at once;
deleted pods removed) plus stages that let a test decide a pod's outcome by annotation:

``rft-operator.io/fake-exit-code``
    the containers terminate with this exit code (phase Succeeded if 0, Failed otherwise);
``rft-operator.io/fake-termination-message``
    the containers' terminated state carries this message (e.g. the trainer's JSON summary);
``rft-operator.io/fake-reason``
    the terminated state's reason (default ``Completed`` or ``Error``);
``rft-operator.io/fake-delay``
    wait this long after Running before terminating (a Go duration such as ``3s``).

Any of the first three or the delay makes a pod terminate, whoever owns it; a pod with none
of them terminates at once only when a Job owns it, like kwok's fast stages.
"""

from __future__ import annotations

from typing import Any

import yaml

FAKE_EXIT_CODE = "rft-operator.io/fake-exit-code"
FAKE_TERMINATION_MESSAGE = "rft-operator.io/fake-termination-message"
FAKE_REASON = "rft-operator.io/fake-reason"
FAKE_DELAY = "rft-operator.io/fake-delay"

_POD = {"apiGroup": "v1", "kind": "Pod"}


def _annotation(key: str) -> str:
    return f'.metadata.annotations["{key}"]'


def _exists(key: str) -> dict[str, Any]:
    return {"key": key, "operator": "Exists"}


def _absent(key: str) -> dict[str, Any]:
    return {"key": key, "operator": "DoesNotExist"}


_NOT_DELETING = _absent(".metadata.deletionTimestamp")
_RUNNING = {"key": ".status.phase", "operator": "In", "values": ["Running"]}

_READY_TEMPLATE = """\
{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: ContainersReady
{{ range .spec.readinessGates }}
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: {{ .conditionType | Quote }}
{{ end }}
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  restartCount: 0
  started: true
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
initContainerStatuses:
{{ range .spec.initContainers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  restartCount: 0
  state:
    terminated:
      exitCode: 0
      finishedAt: {{ $now | Quote }}
      reason: Completed
      startedAt: {{ $now | Quote }}
{{ end }}
hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) \
( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
phase: Running
startTime: {{ $now | Quote }}
"""

# One template for every terminating stage: defaults give exit code 0 and no message.
_TERMINATE_TEMPLATE = f"""\
{{{{ $now := Now }}}}
{{{{ $annotations := or .metadata.annotations dict }}}}
{{{{ $code := atoi ( or ( index $annotations "{FAKE_EXIT_CODE}" ) "0" ) }}}}
{{{{ $message := or ( index $annotations "{FAKE_TERMINATION_MESSAGE}" ) "" }}}}
{{{{ $reason := or ( index $annotations "{FAKE_REASON}" ) ( ternary "Completed" "Error" ( eq $code 0 ) ) }}}}
conditions:
- lastTransitionTime: {{{{ $now | Quote }}}}
  status: "False"
  reason: PodCompleted
  type: Ready
- lastTransitionTime: {{{{ $now | Quote }}}}
  status: "False"
  reason: PodCompleted
  type: ContainersReady
containerStatuses:
{{{{ range .spec.containers }}}}
- image: {{{{ .image | Quote }}}}
  name: {{{{ .name | Quote }}}}
  ready: false
  restartCount: 0
  started: false
  state:
    terminated:
      exitCode: {{{{ $code }}}}
      reason: {{{{ $reason | Quote }}}}
      message: {{{{ $message | Quote }}}}
      startedAt: {{{{ $now | Quote }}}}
      finishedAt: {{{{ $now | Quote }}}}
{{{{ end }}}}
phase: {{{{ if eq $code 0 }}}}Succeeded{{{{ else }}}}Failed{{{{ end }}}}
"""


def _stage(name: str, selector: list[dict[str, Any]], next_: dict[str, Any], **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"resourceRef": _POD, "selector": {"matchExpressions": selector}, **extra}
    spec["next"] = next_
    return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name}, "spec": spec}


def _terminate(name: str, selector: list[dict[str, Any]]) -> dict[str, Any]:
    return _stage(
        name,
        [_NOT_DELETING, _RUNNING, *selector],
        {"statusTemplate": _TERMINATE_TEMPLATE},
        delay={"durationMilliseconds": 0, "durationFrom": {"expressionFrom": _annotation(FAKE_DELAY)}},
    )


def pod_stages() -> list[dict[str, Any]]:
    """The kwok Stage documents for pods; their selectors are mutually exclusive."""
    exit_code, message, delay = (
        _annotation(k) for k in (FAKE_EXIT_CODE, FAKE_TERMINATION_MESSAGE, FAKE_DELAY)
    )
    return [
        _stage(
            "pod-ready",
            [_NOT_DELETING, _absent(".status.podIP")],
            {"statusTemplate": _READY_TEMPLATE},
        ),
        _stage(
            "pod-complete",
            [
                _NOT_DELETING,
                _RUNNING,
                {"key": ".metadata.ownerReferences.[].kind", "operator": "In", "values": ["Job"]},
                _absent(exit_code),
                _absent(message),
                _absent(delay),
            ],
            {"statusTemplate": _TERMINATE_TEMPLATE},
        ),
        _terminate("rft-pod-exit-code", [_exists(exit_code)]),
        _terminate("rft-pod-termination-message", [_absent(exit_code), _exists(message)]),
        _terminate("rft-pod-complete-after-delay", [_absent(exit_code), _absent(message), _exists(delay)]),
        _stage(
            "pod-delete",
            [_exists(".metadata.deletionTimestamp")],
            {"finalizers": {"empty": True}, "delete": True},
        ),
    ]


class _BlockStyleDumper(yaml.SafeDumper):
    """Dump multi-line strings as literal blocks so the generated file stays readable."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_BlockStyleDumper.add_representer(str, _represent_str)


def render_kwok_config() -> str:
    """The multi-document YAML file passed to ``kwok --config``."""
    return yaml.dump_all(pod_stages(), Dumper=_BlockStyleDumper, sort_keys=False)
