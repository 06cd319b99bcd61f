"""``python -m opss.server`` = ``opss-server``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
