"""``python -m neurodeploy``: the command line (what ``torchrun -m neurodeploy ...`` starts in every rank)."""

import sys

from neurodeploy.cli import main

sys.exit(main())
