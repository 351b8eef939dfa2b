"""Each image's environment, built from its lock alone, runs its entry points.

No Docker engine runs here, so this builds what the Dockerfile's `*-env` stages build: a virtualenv
synced from deploy/image/<target>.lock with hashes required, plus the project without dependencies.
The pinned files come from uv's cache (filled by `make venv` from the same uv.lock): the test is
offline, and fails if an image lock lacks something its code imports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from tests.chart.helm import REPO

UV = Path(sys.executable).parent / "uv"
IMAGE_DIR = REPO / "deploy" / "image"
EXTRAS = {"operator.lock": "operator", "trainer.lock": "trainer", "serving-helpers.lock": "storage"}
BUILD_CONTEXT = ("pyproject.toml", "README.md", "core", "operator", "trainer")
# The folders whose packages the wheel holds (pyproject.toml's packages.find).
PRODUCT_ROOTS = ("core", "operator", "trainer")

# Every module of the packages an image runs, imported in that image's environment. The operator
# image runs the operator, whose builders render vLLM's command line without vLLM or torch.
IMPORT_ALL = """
import importlib, pkgutil, sys
for root in sys.argv[1:]:
    package = importlib.import_module(root)
    for info in pkgutil.walk_packages(package.__path__, root + "."):
        if not info.name.endswith(".__main__"):  # a program, not a module: the tests below run them
            importlib.import_module(info.name)
print("imported")
"""


def _lock_pins_for_this_machine(lock: str) -> dict[str, str]:
    """The image lock's pins whose markers hold here (name -> version)."""
    pins = {}
    pattern = r"^([A-Za-z0-9_.\-]+)==([^\s;]+)(?:\s*;\s*(.+?))?\s*\\?$"
    for name, version, marker in re.findall(pattern, (IMAGE_DIR / lock).read_text(), flags=re.MULTILINE):
        if not marker or Marker(marker).evaluate():
            pins[canonicalize_name(name)] = version
    return pins


def _environment(tmp_path: Path, lock: str) -> Path:
    """A venv with exactly `lock`'s packages (hash-checked, offline) and the project's wheel,
    without dependencies, as the Dockerfile's `<target>-env` stage builds it."""
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    env = {
        **os.environ,
        "UV_OFFLINE": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_PROJECT_ENVIRONMENT": str(venv),
    }
    env.pop("VIRTUAL_ENV", None)

    def uv(*args: str) -> None:
        result = subprocess.run(
            [str(UV), *args], cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=600
        )
        assert result.returncode == 0, f"uv {' '.join(args)}:\n{result.stderr[-3000:]}"

    uv("venv", "--quiet", "--python", base_python, str(venv))
    python = str(venv / "bin" / "python")
    # The image lock is `uv export` of uv.lock's extra (tests/chart/test_image.py): install that
    # extra from uv.lock, which names every file's URL and hash, so uv's cache (filled by
    # `make venv`) serves it offline; `uv pip sync <lock>` would need the index's pages as well.
    # Then the environment must hold exactly the image lock's pins for this machine.
    uv("sync", "--quiet", "--frozen", "--extra", EXTRAS[lock], "--no-install-project", "--python", python)
    installed = _installed(venv)
    assert installed == _lock_pins_for_this_machine(lock), f"{lock} and the environment differ"
    wheel = _build_wheel(tmp_path)
    uv("pip", "install", "--quiet", "--python", python, "--no-deps", str(wheel))
    return venv


def _build_wheel(tmp_path: Path) -> Path:
    """The project's wheel, built as the Dockerfile's `wheel` stage builds it: from what that stage
    copies, with the pinned build backend (build.lock, hashes required), offline."""
    source = tmp_path / "src"
    source.mkdir()
    for name in BUILD_CONTEXT:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            shutil.copy2(REPO / name, source / name)
    env = {**os.environ, "UV_OFFLINE": "1", "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    built = subprocess.run(
        [
            str(UV),
            "build",
            "--quiet",
            "--wheel",
            "--python",
            getattr(sys, "_base_executable", sys.executable),
            "--build-constraints",
            str(IMAGE_DIR / "build.lock"),
            "--require-hashes",
            "--out-dir",
            str(tmp_path / "wheels"),
            str(source),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert built.returncode == 0, f"uv build:\n{built.stderr[-3000:]}"
    wheels = sorted((tmp_path / "wheels").glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_the_wheel_holds_the_product_and_no_tooling(tmp_path: Path) -> None:
    """`pip install .[operator]` (and every image) gets exactly the sources of rft, rft_operator and
    rft_trainer: no rft_devcluster (local cluster, fake vLLM, the tiny test model), no test helpers."""
    with zipfile.ZipFile(_build_wheel(tmp_path)) as wheel:
        names = wheel.namelist()
    code = sorted(name for name in names if ".dist-info/" not in name)
    tracked = subprocess.run(
        ["git", "ls-files", "--", *(f"{root}/*.py" for root in PRODUCT_ROOTS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    sources = sorted(path.split("/", 1)[1] for path in tracked)
    assert [name for name in code if name.endswith(".py")] == sources
    assert {name.split("/", 1)[0] for name in code} == {"rft", "rft_operator", "rft_trainer"}
    for name in names:
        assert "rft_devcluster" not in name, name
        assert not re.search(r"(^|/)(tiny|testing|conftest|test_\w+)\.py$", name), name
    # Package data is what the code reads at run time (py.typed markers, JSON, YAML, templates).
    data = [name for name in code if not name.endswith(".py")]
    assert all(name.endswith(("py.typed", ".json", ".yaml", ".jinja")) for name in data), data


def _run(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # -I: the venv alone (no PYTHONPATH, no user site, not the checkout's sources).
    return subprocess.run(
        [str(venv / "bin" / "python"), "-I", *args],
        cwd=venv,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def _installed(venv: Path) -> dict[str, str]:
    """Every distribution in the venv: name -> version."""
    listed = _run(
        venv,
        "-c",
        "import importlib.metadata as m; print('\\n'.join(f\"{d.metadata['Name']} {d.version}\" for d in m.distributions()))",
    )
    assert listed.returncode == 0, listed.stderr
    pairs = (line.split() for line in listed.stdout.splitlines() if line.strip())
    return {canonicalize_name(name): version for name, version in pairs}


@pytest.mark.slow
def test_the_operator_runs_from_the_operator_lock_alone(tmp_path: Path) -> None:
    venv = _environment(tmp_path, "operator.lock")
    imported = _run(venv, "-c", IMPORT_ALL, "rft_operator", "rft.api")
    assert imported.returncode == 0, imported.stderr
    # The entry point of the image (`python -m rft_operator`) starts Kopf's command line.
    help_text = _run(venv, "-m", "rft_operator", "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "--all-namespaces" in help_text.stdout
    # No bucket access and no torch in the operator's image.
    installed = _installed(venv)
    assert "kopf" in installed
    assert not {"boto3", "botocore", "google-cloud-storage", "torch", "transformers"} & installed.keys()


@pytest.mark.slow
def test_the_trainer_runs_from_the_trainer_lock_alone(tmp_path: Path) -> None:
    venv = _environment(tmp_path, "trainer.lock")
    imported = _run(venv, "-c", IMPORT_ALL, "rft_trainer", "rft.storage", "rft.rows")
    assert imported.returncode == 0, imported.stderr
    # The trainer image's other entry point, dataset validation; the wheel holds the serving helpers'
    # programs too (their pods run the serving-helpers image).
    for module in ("rft.pods.validate", "rft.pods.fetch", "rft.pods.adapter_sidecar"):
        loaded = _run(venv, "-c", f"import {module}")
        assert loaded.returncode == 0, f"{module}: {loaded.stderr}"
    installed = _installed(venv)
    assert {"torch", "boto3", "google-cloud-storage"} <= installed.keys()
    assert "kopf" not in installed


def test_the_wheel_is_built_from_what_the_dockerfile_copies() -> None:
    """BUILD_CONTEXT above is the Dockerfile's `wheel` stage (its lock aside)."""
    text = (REPO / "Dockerfile").read_text()
    stage = text.split(" AS wheel\n", 1)[1].split("\nFROM ", 1)[0]
    copied = [
        source
        for line in stage.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert sorted(copied) == sorted([*BUILD_CONTEXT, "deploy/image/build.lock"])


# Shared libraries the distroless base (gcr.io/distroless/cc-debian12) provides: glibc, libgcc_s and
# libstdc++. Anything else an extension module links must come with its wheel (auditwheel's *.libs).
DISTROLESS_CC_LIBS = re.compile(
    r"(linux-vdso|ld-linux[-\w.]*|lib(c|m|dl|rt|pthread|util|resolv)|libgcc_s|libstdc\+\+)\.so(\.\d+)*"
)


@pytest.mark.slow
def test_the_serving_helpers_run_from_their_lock_alone(tmp_path: Path) -> None:
    """The vLLM server pods' init container (`python -m rft.pods.fetch`) and sidecar
    (`python -m rft.pods.adapter_sidecar`), and the base model check Job (`python -m rft.pods.check_model`),
    run from `.[storage]`: both bucket backends, no torch."""
    venv = _environment(tmp_path, "serving-helpers.lock")
    # The programs and every storage backend they load on first use (s3://, gs://, file://).
    imported = _run(venv, "-c", IMPORT_ALL, "rft.storage")
    assert imported.returncode == 0, imported.stderr
    for module in ("rft.pods.fetch", "rft.pods.adapter_sidecar", "rft.pods.check_model", "rft.pods.admin_guard"):
        help_text = _run(venv, "-m", module, "--help")
        assert help_text.returncode == 0, f"{module}: {help_text.stderr}"
        assert help_text.stdout.startswith("usage:"), help_text.stdout
    # A real fetch of a committed checkpoint (file://: the code path of s3:// and gs:// but the
    # backend's calls).
    source = tmp_path / "ckpt"
    source.mkdir()
    (source / "weights.bin").write_bytes(b"w" * 1000)
    bucket = tmp_path / "bucket" / "models" / "m"
    published = _run(
        venv,
        "-c",
        "import sys; from pathlib import Path; from rft.storage.checkpoints import publish_checkpoint; "
        "publish_checkpoint(Path(sys.argv[1]), sys.argv[2], {})",
        str(source),
        bucket.as_uri(),
    )
    assert published.returncode == 0, published.stderr
    report = tmp_path / "fetch-termination-log"
    fetched = _run(
        venv, "-m", "rft.pods.fetch", bucket.as_uri(), str(tmp_path / "dest"), "--termination-log", str(report)
    )
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert json.loads(report.read_text())["bytes"] is None  # a committed checkpoint: counted in files
    assert json.loads(report.read_text())["files"] == 1
    assert (tmp_path / "dest" / "weights.bin").read_bytes() == b"w" * 1000
    # The model check reads the published folder (not a model: refused with its reason, exit 1).
    checked = _run(
        venv, "-m", "rft.pods.check_model", "--location", bucket.as_uri(), "--termination-log", str(tmp_path / "t")
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert '"reason":"NotAModel"' in (tmp_path / "t").read_text()
    # What the helpers load, and what the environment holds: no torch, no vLLM, no Kubernetes client.
    loaded = _run(
        venv,
        "-c",
        "import sys, rft.pods.fetch, rft.pods.adapter_sidecar, rft.pods.check_model, rft.storage.s3, rft.storage.gcs; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))",
    )
    assert loaded.returncode == 0, loaded.stderr
    assert not {"torch", "transformers", "vllm", "kubernetes", "kopf"} & set(loaded.stdout.split())
    installed = _installed(venv)
    assert {"boto3", "google-cloud-storage"} <= installed.keys()
    assert not {"torch", "transformers", "kopf", "kubernetes", "fastapi"} & installed.keys()
    assert not any(name.startswith("nvidia-") for name in installed)
    # Every extension module finds its libraries on the distroless base or in its own wheel.
    for library in venv.rglob("*.so*"):
        if not library.is_file():
            continue
        ldd = subprocess.run(["ldd", str(library)], capture_output=True, text=True, check=False, timeout=60)
        for line in ldd.stdout.splitlines():
            needed, _, resolved = line.strip().partition(" => ")
            if "not found" in resolved:
                pytest.fail(f"{library.name} needs {needed}, which is missing")
            if needed and not DISTROLESS_CC_LIBS.fullmatch(needed.split()[0].rpartition("/")[2]):
                assert resolved.startswith(str(venv)), f"{library.name} needs {needed} from the host"
