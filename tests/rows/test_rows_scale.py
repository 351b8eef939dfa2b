"""A 200,000-row dataset validates in one streaming pass with bounded memory."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROWS = 200_000
SAMPLES_PER_ROW = 4

# Runs in a fresh interpreter. Memory comes from /proc/self/status: VmHWM is the peak RSS of this
# program, whereas ru_maxrss would carry over the (larger) peak of the forking pytest process.
_MEASURE = """
import json, sys, time
from rft.pods import validate

def status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])

before = status_kib("VmRSS")
start = time.perf_counter()
code = validate.main(["--source", sys.argv[1], "--termination-log", sys.argv[2]])
seconds = time.perf_counter() - start
print(json.dumps({"code": code, "seconds": seconds, "rss_kib_before": before, "rss_kib_peak": status_kib("VmHWM")}))
"""


def _write_dataset(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("wb") as out:
        for i in range(ROWS):
            prompt = [
                {
                    "role": "system",
                    "content": "You are a careful assistant that answers arithmetic questions.",
                },
                {"role": "user", "content": f"What is {i} + {i * 7 % 1000}? Explain briefly."},
            ]
            row = {
                "samples": [
                    {
                        "messages": [
                            *prompt,
                            {"role": "assistant", "content": f"The answer is {i + j}. " * 3},
                        ],
                        "evals": {"score": (i + j) % 5 / 4, "format": 1.0},
                    }
                    for j in range(SAMPLES_PER_ROW)
                ]
            }
            line = json.dumps(row).encode() + b"\n"
            digest.update(line)
            size += len(line)
            out.write(line)
    return size, "sha256:" + digest.hexdigest()


@pytest.mark.slow
def test_200k_rows_validate_with_bounded_memory(tmp_path: Path) -> None:
    dataset = tmp_path / "big.jsonl"
    size, digest = _write_dataset(dataset)
    log = tmp_path / "termination-log"
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, f"file://{dataset}", str(log)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    summary = json.loads(log.read_bytes())
    assert measured["code"] == 0
    assert summary["ok"] is True
    assert summary["rows"] == ROWS
    assert summary["bytes"] == size
    assert summary["digest"] == digest
    assert (summary["minSamples"], summary["maxSamples"]) == (SAMPLES_PER_ROW, SAMPLES_PER_ROW)
    growth_mib = (measured["rss_kib_peak"] - measured["rss_kib_before"]) / 1024
    print(
        f"\n{ROWS} rows, {size / 2**20:.0f} MiB: {ROWS / measured['seconds']:,.0f} rows/s, "
        f"{size / 2**20 / measured['seconds']:.1f} MiB/s, peak RSS {measured['rss_kib_peak'] / 1024:.0f} MiB "
        f"(+{growth_mib:.1f} MiB over the imports)"
    )
    # Generous bounds: the file is ~250 MiB; holding it, or even its parsed rows, would need far more.
    assert measured["rss_kib_peak"] / 1024 < 128
    assert growth_mib < 32
