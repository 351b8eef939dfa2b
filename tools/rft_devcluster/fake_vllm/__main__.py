"""`python -m rft_devcluster.fake_vllm MODEL [options]`: see `--help`."""

from __future__ import annotations

from rft_devcluster.fake_vllm.cli import parse_config


def main() -> None:
    """Parse the arguments first (fast, no torch), then load the model and serve."""
    config = parse_config()
    from rft_devcluster.fake_vllm.main import run  # noqa: PLC0415  (torch loads only after the arguments are valid)

    run(config)


if __name__ == "__main__":
    main()
