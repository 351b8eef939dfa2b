"""Model weights into a pod: the serving pods' pinned fetch (`rft.storage.model_folder.fetch_pinned`:
the served files 8 at a time, each verified against its pin) against the peer, the same files
downloaded one after another with the same digest check (what the fetch did before), from S3
(moto on loopback); and the model check's read-and-hash rate (`check_model_folder`).

moto serves S3 from this machine's 2 cores, so the figures say what the client code costs and how
much the parallel streams win against one endpoint; a real object store's per-stream rate is not
measured here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from rft.storage import download_file, reset_clients, upload_file
from rft.storage.model_folder import check_model_folder, fetch_pinned
from rft_devcluster.emulators import DEFAULT_REGION, create_s3_bucket, start_moto_server
from safetensors.numpy import save_file

from bench.common import Row, Stats, write_result

BUCKET = "bench-models"
SIXTEEN_GB = 16 * 10**9


def build_folder(root: Path, shards: int, shard_mib: int) -> Path:
    """A model folder of `shards` safetensors shards of `shard_mib` MiB each, plus config and tokenizer."""
    root.mkdir(parents=True)
    (root / "config.json").write_text('{"architectures": ["BenchForCausalLM"], "model_type": "bench"}')
    (root / "tokenizer.json").write_text('{"model": {"type": "BPE"}}')
    rng = np.random.default_rng(0)
    for index in range(shards):
        values = rng.standard_normal(shard_mib * 2**20 // 4, dtype=np.float32)
        save_file(
            {f"layer{index}.weight": values}, str(root / f"model-{index + 1:05d}-of-{shards:05d}.safetensors")
        )
    return root


def _sequential_fetch(url: str, dest: Path, files: list[tuple[str, str]]) -> None:
    for path, sha256 in files:
        download_file(f"{url}{path}", dest / path, expected_sha256=sha256)


def benchmark(quick: bool = False, results_dir: Path | None = None) -> list[Row]:
    """Entry point for `python -m bench` (quick: 2 shards of 16 MiB, one repetition)."""
    shards, shard_mib, repeats = (2, 16, 1) if quick else (8, 64, 3)
    work = Path(tempfile.mkdtemp(prefix="bench-model-fetch-"))
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    moto = start_moto_server(log_dir=work)
    try:
        create_s3_bucket(moto.endpoint, BUCKET)
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": moto.endpoint,
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench-secret",
                "AWS_DEFAULT_REGION": DEFAULT_REGION,
            }
        )
        reset_clients()
        local = build_folder(work / "model", shards, shard_mib)
        url = f"s3://{BUCKET}/models/bench/"
        for path in sorted(local.iterdir()):
            upload_file(path, f"{url}{path.name}", create_only=True)
        started = time.perf_counter()
        checked = check_model_folder(url)
        check_seconds = time.perf_counter() - started
        size = checked.bytes
        ours, peer = Stats(), Stats()
        for repeat in range(repeats):
            for label, stats in (("ours", ours), ("peer", peer)):
                dest = work / f"{label}-{repeat}"
                started = time.perf_counter()
                if label == "ours":
                    fetch_pinned(url, dest, checked.digest, checked.files)
                else:
                    _sequential_fetch(url, dest, [(r.path, r.sha256) for r in checked.files])
                stats.values.append(size / (time.perf_counter() - started) / 2**20)
                shutil.rmtree(dest)
    finally:
        moto.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_clients()
        shutil.rmtree(work, ignore_errors=True)
    check_rate = size / check_seconds / 2**20
    estimate = SIXTEEN_GB / (ours.median * 2**20)
    write_result(
        "model_fetch",
        {
            "workload": {
                "shards": shards,
                "shard_mib": shard_mib,
                "bytes": size,
                "files": len(checked.files),
            },
            "fetch_mib_per_s": {"ours_parallel_8": ours.to_json(), "peer_sequential": peer.to_json()},
            "check_mib_per_s": check_rate,
            "sixteen_gb_fetch_seconds_at_measured_rate": estimate,
            "store": "moto on loopback (2 cores shared with the client)",
        },
        results_dir,
    )
    note = f"{len(checked.files)} files, {size / 2**20:.0f} MiB, moto on loopback; median of {repeats}"
    return [
        Row(
            "model_fetch",
            "pinned fetch MiB/s (8 streams vs 1)",
            f"{ours.median:.0f}",
            f"{peer.median:.0f}",
            f"{ours.median / peer.median:.2f}x",
            note=note,
        ),
        Row("model_fetch", "model check read+hash MiB/s", f"{check_rate:.0f}", note="one pass, 8 streams"),
        Row(
            "model_fetch",
            "16 GB model fetched at that rate (s)",
            f"{estimate:.0f}",
            note="from this machine's moto; a real bucket's rate differs",
        ),
    ]
