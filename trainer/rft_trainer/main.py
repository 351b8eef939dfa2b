"""Entry point: `python -m rft_trainer --config PATH` (or the JSON in $RFT_TRAINER_CONFIG).

Exit codes: 0 success; 1 bad input (config, data, checkpoint: retrying will not help); 2
infrastructure (storage, hardware, unexpected errors: a retry may help). Either way a JSON summary
goes to the termination log.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from rft.contracts.trainer_config import (
    EXIT_BAD_INPUT,
    EXIT_INFRASTRUCTURE,
    EXIT_OK,
    FailureReason,
    TrainerConfig,
    TrainerFailure,
)
from rft.storage import AlreadyExists, DigestMismatch, StorageError

from rft_trainer.checkpoint import failure_message, make_failure, result_message, write_termination_log
from rft_trainer.errors import TrainerError
from rft_trainer.progress import ProgressReporter

DEFAULT_TERMINATION_LOG = "/dev/termination-log"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rft_trainer", description="Run one reinforcement step (LoRA policy gradient)."
    )
    parser.add_argument(
        "--config",
        help="Path of the TrainerConfig JSON (default: the RFT_TRAINER_CONFIG environment variable)",
    )
    return parser.parse_args(argv)


def classify(exc: BaseException) -> tuple[FailureReason, str, int]:
    """(reason, message, exit code) for any failure of a run."""
    if isinstance(exc, TrainerError):
        return exc.reason, exc.message, exc.exit_code
    if isinstance(exc, AlreadyExists):
        return "OutputExists", str(exc), EXIT_BAD_INPUT
    if isinstance(exc, DigestMismatch):
        return "StorageError", str(exc), EXIT_BAD_INPUT
    if isinstance(exc, StorageError):
        return "StorageError", str(exc), EXIT_INFRASTRUCTURE
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return "TrainingFailed", f"out of memory: {exc}".strip(), EXIT_INFRASTRUCTURE
    return "InternalError", f"{type(exc).__name__}: {exc}", EXIT_INFRASTRUCTURE


def _fail(path: str, failure: TrainerFailure, reporter: ProgressReporter | None, code: int) -> int:
    write_termination_log(path, failure_message(failure))
    if reporter is not None:
        reporter.phase("failed", f"{failure.reason}: {failure.message}"[:2048])
    print(f"[rft-trainer] FAILED ({failure.reason}): {failure.message}", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one step and return the process exit code."""
    args = _parse_args(argv)
    try:
        config = TrainerConfig.load(args.config)
    except ValueError as exc:
        return _fail(DEFAULT_TERMINATION_LOG, make_failure("InvalidConfig", str(exc)), None, EXIT_BAD_INPUT)

    if not config.allow_hub_download:
        # Belt and braces: nothing in this process may reach the Hugging Face Hub.
        os.environ["HF_HUB_OFFLINE"] = "1"
    # Under torchrun only rank 0 reports: one progress stream, one server on the port, one summary.
    lead = os.environ.get("RANK", "0") == "0"
    reporter = ProgressReporter(quiet=not lead)
    try:
        if config.progress_port is not None and lead:
            reporter.serve(config.progress_port)
        from rft_trainer.run import run_step  # noqa: PLC0415 - torch loads only once the config is valid

        result = run_step(config, reporter)
        if result is not None:
            write_termination_log(config.termination_log, result_message(result))
            reporter.update(
                reporter.latest.model_copy(
                    update={"phase": "done", "message": f"adapter published to {result.output_location}"}
                )
            )
        return EXIT_OK
    except Exception as exc:
        reason, message, code = classify(exc)
        if reason == "InternalError":
            traceback.print_exc(file=sys.stderr)
        if not lead:
            print(
                f"[rft-trainer] rank {os.environ.get('RANK')} FAILED ({reason}): {message}", file=sys.stderr
            )
            return code
        return _fail(config.termination_log, make_failure(reason, message), reporter, code)
    finally:
        reporter.close()


if __name__ == "__main__":
    sys.exit(main())
