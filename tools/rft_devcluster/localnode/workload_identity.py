"""EKS's pod identity webhook, emulated for the local node (IRSA).

On EKS a mutating webhook gives every pod whose ServiceAccount carries the annotation
``eks.amazonaws.com/role-arn`` a projected ServiceAccount token for the audience
``sts.amazonaws.com`` and the environment boto3 needs to trade it for role credentials
(``AWS_ROLE_ARN``, ``AWS_WEB_IDENTITY_TOKEN_FILE``). The local node applies the same mutation to
a pod before it runs it, plus the node's extra environment (on a development machine: the
S3/STS emulator's endpoint and region), so the operator's pods use workload identity here
exactly as on EKS: no keys anywhere.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

ROLE_ARN_ANNOTATION = "eks.amazonaws.com/role-arn"
TOKEN_AUDIENCE = "sts.amazonaws.com"  # noqa: S105 - an audience, not a secret
TOKEN_DIR = "/var/run/secrets/eks.amazonaws.com/serviceaccount"  # noqa: S105 - a path
VOLUME_NAME = "aws-iam-token"
TOKEN_SECONDS = 86400


def role_arn(service_account: Mapping[str, Any] | None) -> str | None:
    annotations = ((service_account or {}).get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ROLE_ARN_ANNOTATION)
    return str(value) if value else None


def inject_web_identity(
    pod: Mapping[str, Any], service_account: Mapping[str, Any] | None, extra_env: Mapping[str, str]
) -> dict[str, Any]:
    """The pod as the webhook would admit it (a copy; unchanged without the annotation)."""
    out: dict[str, Any] = copy.deepcopy(dict(pod))
    role = role_arn(service_account)
    if role is None:
        return out
    spec = out["spec"]
    volumes = spec.setdefault("volumes", [])
    if not any(v.get("name") == VOLUME_NAME for v in volumes):
        volumes.append(
            {
                "name": VOLUME_NAME,
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "audience": TOKEN_AUDIENCE,
                                "expirationSeconds": TOKEN_SECONDS,
                                "path": "token",
                            }
                        }
                    ]
                },
            }
        )
    wanted = {
        "AWS_ROLE_ARN": role,
        "AWS_WEB_IDENTITY_TOKEN_FILE": f"{TOKEN_DIR}/token",
        "AWS_STS_REGIONAL_ENDPOINTS": "regional",
        **extra_env,
    }
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        env = container.setdefault("env", [])
        present = {e["name"] for e in env}
        if "AWS_ROLE_ARN" in present:  # the webhook leaves containers that set their own alone
            continue
        env.extend({"name": k, "value": v} for k, v in wanted.items() if k not in present)
        mounts = container.setdefault("volumeMounts", [])
        if not any(m.get("name") == VOLUME_NAME for m in mounts):
            mounts.append({"name": VOLUME_NAME, "mountPath": TOKEN_DIR, "readOnly": True})
    return out
