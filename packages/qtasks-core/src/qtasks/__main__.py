"""``python -m qtasks``: the same as the ``qtasks`` command."""

from qtasks.cli import main

raise SystemExit(main())
