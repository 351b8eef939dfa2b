"""`python -m rft_trainer --config PATH`: run one reinforcement step."""

import sys

from rft_trainer.main import main

sys.exit(main())
