"""``python -m catur.cli ...`` runs the ``catur`` command."""

import sys

from catur.cli.main import main

sys.exit(main())
