"""`python -m rft_operator [kopf run options]`: run the operator (all namespaces by default)."""

from __future__ import annotations

import sys

from kopf.cli import main as kopf_main


def main() -> None:
    args = sys.argv[1:] or ["--all-namespaces"]
    sys.argv = ["kopf", "run", "-m", "rft_operator.main", *args]
    kopf_main()


if __name__ == "__main__":
    main()
