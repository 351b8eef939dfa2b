"""Where the SDK works: namespace, bucket, ServiceAccount and kubeconfig.

Each setting comes from, in order: an explicit argument, an environment variable, the config file
(`~/.config/rft/config.yaml`, or the path in `RFT_CONFIG`), then a default. The namespace falls back
to the kubeconfig context's namespace (or the pod's own namespace in a cluster), then "default".
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rft.api.common import STORAGE_URL_PATTERN
from rft.sdk.names import check_object_name

CONFIG_PATH_ENV = "RFT_CONFIG"
NAMESPACE_ENV = "RFT_NAMESPACE"
BUCKET_ENV = "RFT_BUCKET"
SERVICE_ACCOUNT_ENV = "RFT_SERVICE_ACCOUNT"
KUBECONFIG_ENV = "KUBECONFIG"
DEFAULT_CONFIG_PATH = Path("~/.config/rft/config.yaml")
DEFAULT_KUBECONFIG_PATH = Path("~/.kube/config")
IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
CONFIG_FILE_KEYS = frozenset({"namespace", "bucket", "service_account", "kubeconfig", "context"})

_STORAGE_URL_RE = re.compile(STORAGE_URL_PATTERN)


@dataclass(frozen=True)
class SdkConfig:
    """The resolved settings.

    `kubeconfig` is None when no kubeconfig file exists: the client then uses the in-cluster
    ServiceAccount. `bucket` is None when none is configured (only dataset uploads need it).
    """

    namespace: str
    bucket: str | None
    service_account: str
    kubeconfig: str | None
    context: str | None

    def require_bucket(self) -> str:
        """The bucket prefix, or a ValueError that says how to configure one."""
        if self.bucket is None:
            raise ValueError(
                f"bucket: no bucket configured; pass bucket='s3://my-bucket/rft', set {BUCKET_ENV}, "
                f"or add 'bucket:' to {config_file_path()}"
            )
        return self.bucket


def config_file_path(environ: Mapping[str, str] | None = None) -> Path:
    """The config file's path: `$RFT_CONFIG`, else `~/.config/rft/config.yaml`."""
    env = os.environ if environ is None else environ
    return Path(env.get(CONFIG_PATH_ENV) or DEFAULT_CONFIG_PATH).expanduser()


def read_config_file(path: Path) -> dict[str, str]:
    """The config file's settings (empty when the file does not exist); unknown keys are an error."""
    if not path.is_file():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"config file {path}: not valid YAML: {error}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {path}: expected a mapping of settings, got {type(loaded).__name__}")
    unknown = sorted(str(key) for key in loaded if key not in CONFIG_FILE_KEYS)
    if unknown:
        raise ValueError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(CONFIG_FILE_KEYS))}"
        )
    settings: dict[str, str] = {}
    for key, value in loaded.items():
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValueError(f"config file {path}: {key} must be a string, got {type(value).__name__}")
        settings[key] = value
    return settings


def load_config(
    *,
    namespace: str | None = None,
    bucket: str | None = None,
    service_account: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> SdkConfig:
    """Resolve the settings: explicit arguments > environment variables > config file > defaults."""
    env = os.environ if environ is None else environ
    path = config_file_path(env)
    file_settings = read_config_file(path)

    def pick(explicit: str | None, env_name: str | None, key: str) -> tuple[str | None, str]:
        if explicit is not None:
            return explicit, key
        if env_name is not None and env.get(env_name):
            return env[env_name], f"{key} (from ${env_name})"
        if key in file_settings:
            return file_settings[key], f"{key} (from {path})"
        return None, key

    kubeconfig_value, _ = pick(kubeconfig, KUBECONFIG_ENV, "kubeconfig")
    resolved_kubeconfig = _existing_kubeconfig(kubeconfig_value)
    context_value, _ = pick(context, None, "context")

    namespace_value, namespace_source = pick(namespace, NAMESPACE_ENV, "namespace")
    if namespace_value is None:
        namespace_value = _ambient_namespace(resolved_kubeconfig, context_value)
        namespace_source = "namespace (from the kubeconfig context)"
    check_object_name(namespace_value, namespace_source)

    bucket_value, bucket_source = pick(bucket, BUCKET_ENV, "bucket")
    if bucket_value is not None:
        bucket_value = check_bucket(bucket_value, bucket_source)

    account_value, account_source = pick(service_account, SERVICE_ACCOUNT_ENV, "service_account")
    account_value = check_object_name(account_value or "default", account_source)

    return SdkConfig(
        namespace=namespace_value,
        bucket=bucket_value,
        service_account=account_value,
        kubeconfig=resolved_kubeconfig,
        context=context_value,
    )


def check_bucket(value: str, argument: str = "bucket") -> str:
    """A bucket prefix such as `s3://my-bucket/rft`, without a trailing slash."""
    prefix = value.rstrip("/")
    if not _STORAGE_URL_RE.match(f"{prefix}/datasets/probe.jsonl"):
        raise ValueError(
            f"{argument}: {value!r} is not a bucket prefix like s3://my-bucket/rft or gs://my-bucket/rft "
            "(file:///path for local development)"
        )
    return prefix


def _existing_kubeconfig(value: str | None) -> str | None:
    """The kubeconfig path(s) to load, or None to use the in-cluster ServiceAccount."""
    if value is not None:
        return value
    default = DEFAULT_KUBECONFIG_PATH.expanduser()
    return str(default) if default.is_file() else None


def _ambient_namespace(kubeconfig: str | None, context: str | None) -> str:
    if kubeconfig is not None:
        namespace = _kubeconfig_namespace(kubeconfig, context)
        if namespace:
            return namespace
    elif IN_CLUSTER_NAMESPACE_FILE.is_file():
        return IN_CLUSTER_NAMESPACE_FILE.read_text(encoding="utf-8").strip()
    return "default"


def _kubeconfig_namespace(kubeconfig: str, context: str | None) -> str | None:
    # Imported here so that `import rft.sdk.config` stays cheap for code that only reads settings.
    from kubernetes import config as kube_config  # noqa: PLC0415

    try:
        contexts, active = kube_config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except (kube_config.ConfigException, OSError):
        return None
    chosen: Any = active
    if context is not None:
        chosen = next((c for c in contexts or [] if c.get("name") == context), None)
        if chosen is None:
            raise ValueError(f"context: no context named {context!r} in kubeconfig {kubeconfig}")
    namespace = (chosen or {}).get("context", {}).get("namespace")
    return namespace if isinstance(namespace, str) and namespace else None
