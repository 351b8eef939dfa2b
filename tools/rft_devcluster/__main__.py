"""``python -m rft_devcluster``: see :mod:`rft_devcluster.cli`."""

import sys

from rft_devcluster.cli import main

sys.exit(main())
