"""``python -m ingester.cli.monitoring [--check]``."""

import sys

from ingester.cli.monitoring import main

sys.exit(main())
