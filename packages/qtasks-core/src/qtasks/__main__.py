"""``python -m qtasks``: the same as the ``qtasks`` command."""

import sys

from qtasks.cli import main

sys.exit(main())
