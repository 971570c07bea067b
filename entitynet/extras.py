"""What a command says when an optional extra is not installed: one line naming the missing module
and the install command, exit status 2, no traceback."""

from __future__ import annotations

import sys


def missing_extra(command: str, missing: ImportError, extra: str = "train") -> int:
    print(f"entitynet {command}: needs the {extra} extra ({missing.name} is not installed): "
          f"pip install 'entitynet[{extra}]'", file=sys.stderr)
    return 2
