"""``python -m opss.client`` is the same as ``opss-client``."""

from opss.client.cli import main

raise SystemExit(main())
