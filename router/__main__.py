"""`python -m router` — same as the `hybrid-router` command."""

import sys

from router.cli import main

sys.exit(main(sys.argv[1:]))
