"""`python -m apiusage.cli`, as the `apiusage` script."""

import sys

from . import main

sys.exit(main())
