"""`python -m explorer ...` runs the same command line as `explorer ...`."""

import sys

from explorer.cli import main

sys.exit(main())
