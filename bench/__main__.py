"""`python -m bench`: run the benchmarks, print one table, write each one's JSON under bench/results/.

Each benchmark is a function `(quick: bool) -> list[Row]` registered in `BENCHMARKS` by
"module:function" (imported only when it runs, so a benchmark's heavy imports stay its own). To add
one, write the function (it should also write its figures with `bench.common.write_result`) and add
a line here.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence

from bench.common import Row, format_table, machine

BenchmarkFn = Callable[[bool], list[Row]]

BENCHMARKS: dict[str, str] = {
    "trainer_vs_trl": "bench.trainer_vs_trl:benchmark",
    "operator": "bench.operator_scale:benchmark",
    "model_fetch": "bench.model_fetch:benchmark",
    "session_api": "bench.session_api:benchmark",
    "trainer_scaling": "bench.trainer_scaling:benchmark",
    "session_vs_step": "bench.session_vs_step:benchmark",
    "trainer_load_memory": "bench.trainer_scaling:load_memory_benchmark",
}


def resolve(target: str) -> BenchmarkFn:
    """The function a "module:function" registry entry names."""
    module_name, _, attr = target.partition(":")
    fn: BenchmarkFn = getattr(importlib.import_module(module_name), attr)
    return fn


def machine_line() -> str:
    info = machine()
    libs = ", ".join(f"{k} {info[k]}" for k in ("torch", "transformers", "peft", "trl") if info.get(k))
    memory = f", {info['memory_gib']} GiB" if "memory_gib" in info else ""
    return (
        f"machine: {info['cpu']}, {info['cores']} cores{memory}, SIMD {'/'.join(info['simd']) or 'baseline'}; "
        f"torch threads {info['torch_threads']}; Python {info['python']}; {libs}; "
        f"load average now {os.getloadavg()[0]:.1f} (other work on the machine slows every figure)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Run the benchmarks and print a table."
    )
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})"
    )
    parser.add_argument("--quick", action="store_true", help="small workloads, one repetition (a smoke run)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    rows: list[Row] = []
    failed = False
    for name in args.names or list(BENCHMARKS):
        started = time.perf_counter()
        try:
            rows.extend(resolve(BENCHMARKS[name])(args.quick))
        except Exception as exc:
            traceback.print_exc()
            rows.append(
                Row(
                    name, "error", type(exc).__name__, note=str(exc).splitlines()[0][:100] if str(exc) else ""
                )
            )
            failed = True
        print(f"[bench] {name} took {time.perf_counter() - started:.0f}s", file=sys.stderr)
    print(machine_line())
    print(format_table(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
