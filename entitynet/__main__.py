"""``python -m entitynet`` is the ``entitynet`` command."""

import sys

from entitynet.cli import main

if __name__ == "__main__":
    sys.exit(main())
