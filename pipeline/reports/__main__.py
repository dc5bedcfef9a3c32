"""python -m pipeline.reports RUN_DIR [--verify]: the `report` subcommand without the full CLI."""

import sys

from .command import main

sys.exit(main())
