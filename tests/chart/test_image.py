"""The container image recipe (Dockerfile, .dockerignore, deploy/image/*.lock). No Docker engine
runs here: hadolint lints it, and these tests check what a build would rely on."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from rft_operator import config as operator_config

from tests.chart.helm import CHART, REPO

DOCKERFILE = REPO / "Dockerfile"
IMAGE_DIR = REPO / "deploy" / "image"
HADOLINT = Path(sys.executable).parent / "hadolint"
UV = Path(sys.executable).parent / "uv"
TEXT = DOCKERFILE.read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# What deploy/image/lock.sh exports into each image lock.
EXPORTS = {
    "operator.lock": ["--extra", "operator"],
    "trainer.lock": ["--extra", "trainer"],
    "serving-helpers.lock": ["--extra", "storage"],
    "build.lock": ["--only-group", "build"],
}
# The final targets, their base image's ARG, and their lock.
TARGETS = {
    "operator": ("OPERATOR_BASE", "operator.lock"),
    "trainer": ("TRAINER_BASE", "trainer.lock"),
    "serving-helpers": ("SERVING_HELPERS_BASE", "serving-helpers.lock"),
}


def _instructions() -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", TEXT)
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def _args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", TEXT, flags=re.MULTILINE))


def _stages() -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current = None
    for line in _instructions():
        match = re.match(r"FROM (\S+) AS (\S+)", line)
        if match:
            current = match.group(2)
            stages[current] = [line]
        elif current:
            stages[current].append(line)
    return stages


def _lock(name: str) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", (IMAGE_DIR / name).read_text(), flags=re.MULTILINE)
    return {canonicalize_name(n): v for n, v in pins}


# --- hadolint -------------------------------------------------------------------------------------
def _hadolint(path: Path) -> list[dict[str, object]]:
    result = subprocess.run(
        [str(HADOLINT), "--config", str(IMAGE_DIR / "hadolint.yaml"), "--format", "json", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    findings: list[dict[str, object]] = json.loads(result.stdout or "[]")
    assert (result.returncode == 0) == (not findings), result.stderr
    return findings


def test_hadolint_finds_nothing() -> None:
    assert _hadolint(DOCKERFILE) == []


def test_hadolint_with_this_config_catches_the_usual_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nUSER root\n")
    codes = {f["code"] for f in _hadolint(bad)}
    assert {"DL3007", "DL3013", "DL3042", "DL3049"} <= codes


# --- the recipe ---------------------------------------------------------------------------------------
def test_targets_exist_and_run_as_user_1000() -> None:
    stages = _stages()
    for target, (base, lock) in TARGETS.items():
        assert target in stages
        assert stages[target][0] == f"FROM ${{{base}}} AS {target}"
        assert "USER 1000:1000" in stages[target]
        assert any(line.startswith("LABEL org.opencontainers.image.title=") for line in stages[target])
        # Each target's venv stage installs its own lock.
        assert f"COPY deploy/image/{lock} /tmp/requirements.lock" in stages[f"{target}-env"]
    assert 'ENTRYPOINT ["python", "-m", "rft_operator"]' in stages["operator"]
    assert 'CMD ["python", "-m", "rft.pods.adapter_sidecar"]' in stages["serving-helpers"]


def test_the_serving_helpers_have_no_shell() -> None:
    """The serving pods' helpers run on distroless, like the operator: no shell, no package manager."""
    args = _args()
    assert args["SERVING_HELPERS_BASE"].startswith("gcr.io/distroless/")
    assert args["SERVING_HELPERS_BASE"] == args["OPERATOR_BASE"]


def test_final_stages_copy_only_the_interpreter_and_the_virtualenv() -> None:
    """No build tools or caches: the final stages hold the base image, uv's Python and the venv."""
    for target in TARGETS:
        steps = _stages()[target]
        assert not any(s.startswith(("RUN", "ADD")) for s in steps), steps
        copies = [s for s in steps if s.startswith("COPY")]
        assert sorted(copies) == sorted(
            [
                f"COPY --from={target}-env /opt/python /opt/python",
                f"COPY --from={target}-env /opt/venv /opt/venv",
            ]
        )


def test_base_images_are_pinned_release_tags() -> None:
    args = _args()
    for name in ("UV_IMAGE", "BUILD_BASE", "OPERATOR_BASE", "TRAINER_BASE", "SERVING_HELPERS_BASE"):
        image = args[name]
        assert ":" in image.split("/")[-1], image
        tag = image.rsplit(":", 1)[1].split("@")[0]
        assert tag != "latest"
    # Version-pinned tags (distroless only publishes moving tags: pin it by digest, docs/image.md).
    assert re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+", args["UV_IMAGE"])
    assert re.fullmatch(r"debian:\d+\.\d+-slim", args["BUILD_BASE"])
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-base-ubuntu\d+\.\d+", args["TRAINER_BASE"])


def test_every_install_is_hash_checked() -> None:
    runs = " ".join(s for s in _instructions() if s.startswith("RUN"))
    assert "pip install --" not in runs.replace("uv pip install --python /opt/venv/bin/python --no-deps", "")
    assert "apt-get" not in runs
    for command in re.findall(r"uv pip sync [^&]+", runs):
        assert "--require-hashes" in command
    assert re.search(r"uv build [^&]*--build-constraints deploy/image/build.lock --require-hashes", runs)
    # The project itself goes in without dependencies: they all come from the lock.
    for command in re.findall(r"uv pip install [^&]+", runs):
        assert "--no-deps /tmp/wheels/*.whl" in command


def test_python_version_is_the_tested_one() -> None:
    version = _args()["PYTHON_VERSION"]
    assert version == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(f"{version}.0")


def test_versions_agree() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert PYPROJECT["project"]["version"] == chart["appVersion"] == operator_config.VERSION
    assert re.search(rf"^ARG VERSION={re.escape(chart['appVersion'])}$", TEXT, flags=re.MULTILINE)


# --- the lock files ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(EXPORTS))
def test_every_pin_has_hashes(name: str) -> None:
    blocks = re.split(r"\n(?=[A-Za-z0-9_.\-]+==)", (IMAGE_DIR / name).read_text())
    pins = [b for b in blocks if re.match(r"[A-Za-z0-9_.\-]+==", b)]
    assert pins
    for block in pins:
        assert "--hash=sha256:" in block, block.splitlines()[0]


def _extra(name: str) -> list[Requirement]:
    """The requirements of `.[name]`, the project's own extras (`rft-operator[storage]`) expanded."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    requirements = []
    for raw in PYPROJECT["project"]["dependencies"] + extras[name]:
        requirement = Requirement(raw)
        if canonicalize_name(requirement.name) == canonicalize_name(PYPROJECT["project"]["name"]):
            requirements += [r for extra in sorted(requirement.extras) for r in _extra(extra)]
        else:
            requirements.append(requirement)
    return requirements


@pytest.mark.parametrize(
    ("lock", "extra"),
    [("operator.lock", "operator"), ("trainer.lock", "trainer"), ("serving-helpers.lock", "storage")],
)
def test_locks_hold_the_extras_requirements(lock: str, extra: str) -> None:
    pins = _lock(lock)
    for requirement in _extra(extra):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} missing from {lock}: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (requirement, pins[name])


def test_operator_and_serving_helpers_have_no_torch_and_trainer_image_no_kopf() -> None:
    operator, trainer, helpers = _lock("operator.lock"), _lock("trainer.lock"), _lock("serving-helpers.lock")
    for lock in (operator, helpers):
        assert not {"torch", "transformers", "peft", "triton", "safetensors"} & set(lock)
        assert not any(n.startswith("nvidia-") for n in lock)
    assert "kopf" not in trainer
    assert not {"kopf", "kubernetes", "fastapi", "uvicorn"} & set(helpers)
    # The helpers read the bucket: both storage backends.
    assert {"boto3", "google-cloud-storage"} <= set(helpers)


def _uv(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The dev venv's uv (the pinned version) on the repository."""
    return subprocess.run(
        [str(UV), *args], cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=120
    )


@pytest.mark.parametrize("name", list(EXPORTS))
def test_image_locks_are_exported_from_uv_lock(name: str) -> None:
    """Lock against lock: each image lock is `uv export` of uv.lock (deploy/image/lock.sh), so the
    images install the versions the suite ran, and this fails only on a real drift."""
    flags = EXPORTS[name]
    export = _uv(
        "export",
        "--quiet",
        "--frozen",
        "--offline",
        "--no-emit-project",
        "--no-header",
        "--format",
        "requirements.txt",
        *flags,
    )
    assert export.returncode == 0, export.stderr
    exported = export.stdout
    header = f"# Exported from uv.lock by deploy/image/lock.sh (uv export {' '.join(flags)}): do not edit.\n"
    assert (IMAGE_DIR / name).read_text() == header + exported, "run deploy/image/lock.sh (or make lock)"


def test_lock_sh_writes_every_image_lock() -> None:
    """deploy/image/lock.sh exports each lock file here, with the flags the test above checks."""
    script = (IMAGE_DIR / "lock.sh").read_text()
    assert sorted(p.name for p in IMAGE_DIR.glob("*.lock")) == sorted(EXPORTS)
    for name, flags in EXPORTS.items():
        assert f"export_lock deploy/image/{name} {' '.join(flags)}\n" in script, name


def test_uv_lock_matches_pyproject() -> None:
    """uv.lock satisfies pyproject.toml as it is now (`make lock` after editing a requirement)."""
    result = _uv("lock", "--check", "--offline")
    assert result.returncode == 0, result.stderr


def test_the_venv_is_the_lock() -> None:
    """The environment the suite runs in is exactly uv.lock's `dev` extra: no package missing,
    extra or at another version (the same check as `make venv-check`)."""
    result = _uv(
        "sync",
        "--locked",
        "--extra",
        "dev",
        "--check",
        "--offline",
        "--python",
        sys.executable,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": sys.prefix},
    )
    assert result.returncode == 0, result.stderr


def test_one_uv_version_everywhere() -> None:
    """The Makefile's bootstrap, the dev venv, the image's uv and uv.lock's required version agree."""
    makefile_uv = re.search(r"^UV_VERSION := (\S+)$", (REPO / "Makefile").read_text(), flags=re.MULTILINE)
    assert makefile_uv is not None
    version = makefile_uv.group(1)
    assert _args()["UV_IMAGE"].endswith(f":{version}")
    assert PYPROJECT["tool"]["uv"]["required-version"] == f"=={version}"
    assert f"uv=={version}" in PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert PYPROJECT["dependency-groups"]["uv"] == [f"uv=={version}"]
    assert re.match(rf"uv=={re.escape(version)} \\\n", (REPO / "tools" / "uv-bootstrap.lock").read_text())
    assert metadata.version("uv") == version


def test_the_build_group_is_the_build_backend() -> None:
    assert PYPROJECT["dependency-groups"]["build"] == PYPROJECT["build-system"]["requires"]


def test_cuda_base_matches_torchs_cuda_libraries() -> None:
    cuda_major = re.search(r"nvidia/cuda:(\d+)\.", _args()["TRAINER_BASE"])
    assert cuda_major is not None
    wheels = {m for n in _lock("trainer.lock") for m in re.findall(r"^nvidia-cudnn-cu(\d+)$", n)}
    assert wheels == {cuda_major.group(1)}


# --- the build context ----------------------------------------------------------------------------
def _dockerignore_allows(path: str) -> bool:
    """.dockerignore here is an allowlist: `*`, then `!` lines; later lines win."""
    allowed = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if re.fullmatch(regex, path) or re.match(regex + "/", path):
            allowed = negate
    return allowed


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_else() -> None:
    sources = []
    for line in _instructions():
        if line.startswith("COPY") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert sources
    for source in sources:
        if source != "README.md":  # see test_the_readme_the_wheel_needs_exists
            assert (REPO / source).exists(), source
        assert _dockerignore_allows(source), f"{source} is excluded by .dockerignore"
    for excluded in (
        "tests/chart/test_image.py",
        ".venv/bin/python",
        "charts/rft-operator/values.yaml",
        "core/rft/__pycache__/x.pyc",
        "tools/rft_devcluster/cli.py",
        ".git/config",
    ):
        assert not _dockerignore_allows(excluded), excluded


def test_the_readme_the_wheel_needs_exists() -> None:
    """pyproject.toml names README.md as the package's readme: building the wheel (in the image,
    or `pip install .` from a clean checkout) fails without it."""
    assert PYPROJECT["project"]["readme"] == "README.md"
    assert (REPO / "README.md").is_file(), "README.md is missing: the image's wheel build needs it"
