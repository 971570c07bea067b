"""``python -m entitynet`` is the ``entitynet`` command."""

import sys

from entitynet.cli import main

sys.exit(main())
