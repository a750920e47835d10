"""`python -m wan_vae`: see cli.py."""

import sys

from .cli import main

sys.exit(main())
