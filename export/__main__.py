"""`python -m export ...`: see `export.command`."""

import sys

from export.command import main

sys.exit(main())
