"""``python -m ketter``: the command line, as the systemd units run it."""

import sys

from ketter.cli.main import main

sys.exit(main())
