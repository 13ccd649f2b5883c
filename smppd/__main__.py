"""`python -m smppd` is the `smppd` command."""

import sys

from smppd.cli import main

sys.exit(main())
