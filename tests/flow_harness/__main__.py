"""`python -m tests.flow_harness ...`: see `cli.main`."""

import sys

from .cli import main

sys.exit(main())
