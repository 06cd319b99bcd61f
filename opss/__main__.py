"""``python -m opss`` is the same as the ``opss`` command."""

from opss.cli import main

raise SystemExit(main())
