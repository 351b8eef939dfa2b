"""Settings precedence: explicit argument > environment variable > config file > kubeconfig > default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from rft.sdk.config import load_config


def _write_kubeconfig(path: Path, namespace: str | None, extra_context_namespace: str = "other-ns") -> Path:
    context: dict[str, str] = {"cluster": "local", "user": "admin"}
    if namespace is not None:
        context["namespace"] = namespace
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "admin", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "main", "context": context},
                    {
                        "name": "second",
                        "context": {
                            "cluster": "local",
                            "user": "admin",
                            "namespace": extra_context_namespace,
                        },
                    },
                ],
                "current-context": "main",
            }
        )
    )
    return path


def test_defaults_without_any_setting() -> None:
    config = load_config()
    assert config.namespace == "default"
    assert config.bucket is None
    assert config.service_account == "default"


def test_config_file_is_used(isolated_sdk_env: Path) -> None:
    isolated_sdk_env.write_text(
        "namespace: from-file\nbucket: s3://file-bucket/rft/\nservice_account: trainer\n"
    )
    config = load_config()
    assert (config.namespace, config.bucket, config.service_account) == (
        "from-file",
        "s3://file-bucket/rft",
        "trainer",
    )


def test_environment_beats_config_file(isolated_sdk_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolated_sdk_env.write_text("namespace: from-file\nbucket: s3://file-bucket/rft\nservice_account: a\n")
    monkeypatch.setenv("RFT_NAMESPACE", "from-env")
    monkeypatch.setenv("RFT_BUCKET", "gs://env-bucket/prefix")
    monkeypatch.setenv("RFT_SERVICE_ACCOUNT", "b")
    config = load_config()
    assert (config.namespace, config.bucket, config.service_account) == (
        "from-env",
        "gs://env-bucket/prefix",
        "b",
    )


def test_explicit_arguments_beat_environment(isolated_sdk_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolated_sdk_env.write_text("namespace: from-file\n")
    monkeypatch.setenv("RFT_NAMESPACE", "from-env")
    monkeypatch.setenv("RFT_BUCKET", "s3://env-bucket")
    config = load_config(namespace="explicit", bucket="s3://explicit-bucket/x", service_account="c")
    assert (config.namespace, config.bucket, config.service_account) == (
        "explicit",
        "s3://explicit-bucket/x",
        "c",
    )


def test_kubeconfig_context_namespace_is_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = _write_kubeconfig(tmp_path / "kubeconfig", "from-context")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert load_config().namespace == "from-context"
    assert load_config(context="second").namespace == "other-ns"
    assert load_config(kubeconfig=str(kubeconfig)).kubeconfig == str(kubeconfig)
    monkeypatch.setenv("RFT_NAMESPACE", "from-env")
    assert load_config().namespace == "from-env"


def test_kubeconfig_context_without_namespace_means_default(tmp_path: Path) -> None:
    kubeconfig = _write_kubeconfig(tmp_path / "kubeconfig", None)
    assert load_config(kubeconfig=str(kubeconfig)).namespace == "default"


def test_unknown_context_is_an_error(tmp_path: Path) -> None:
    kubeconfig = _write_kubeconfig(tmp_path / "kubeconfig", "ns")
    with pytest.raises(ValueError, match=r"context: no context named 'nope'"):
        load_config(kubeconfig=str(kubeconfig), context="nope")


def test_config_path_comes_from_rft_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "elsewhere.yaml"
    other.write_text("bucket: s3://elsewhere\n")
    monkeypatch.setenv("RFT_CONFIG", str(other))
    assert load_config().bucket == "s3://elsewhere"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("namespace: [a, b]\n", "namespace must be a string"),
        ("bukket: s3://x\n", "unknown setting(s) bukket"),
        ("- just\n- a list\n", "expected a mapping of settings"),
        ("namespace: 'unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_file_names_the_file_and_problem(
    isolated_sdk_env: Path, content: str, message: str
) -> None:
    isolated_sdk_env.write_text(content)
    with pytest.raises(ValueError, match=r"config file") as error:
        load_config()
    assert message in str(error.value)
    assert str(isolated_sdk_env) in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bucket": "http://example.com/x"}, "bucket: 'http://example.com/x' is not a bucket prefix"),
        ({"namespace": "Team_A"}, "namespace: 'Team_A' is not a valid name"),
        ({"service_account": "bad account"}, "service_account: 'bad account' is not a valid name"),
    ],
)
def test_bad_explicit_settings_name_the_argument(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(**kwargs)


def test_bad_env_setting_says_where_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RFT_BUCKET", "ftp://nope")
    with pytest.raises(ValueError, match=r"bucket \(from \$RFT_BUCKET\)"):
        load_config()


def test_require_bucket_explains_how_to_configure() -> None:
    with pytest.raises(ValueError, match=r"bucket: no bucket configured; pass bucket=.*RFT_BUCKET"):
        load_config().require_bucket()
