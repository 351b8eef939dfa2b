"""``python -m rft_devcluster.localnode``: see :mod:`rft_devcluster.localnode.cli`."""

import sys

from rft_devcluster.localnode.cli import main

sys.exit(main())
