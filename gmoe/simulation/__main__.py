"""``python -m gmoe.simulation`` runs the ``gmoe-sim`` command line."""

import sys

from .cli import main

sys.exit(main())
