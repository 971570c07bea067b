"""What a command says when an optional extra is not installed: one line naming the missing module
and the install command, exit status 2, no traceback; the configuration's checks say the same
(``needs``) when a key asks for an extra that is not there (``model.lora`` without peft)."""

from __future__ import annotations

import importlib.util
import sys


def needs(extra: str, module: str | None) -> str:
    """``needs the EXTRA extra (MODULE is not installed): pip install 'entitynet[EXTRA]'``."""
    return f"needs the {extra} extra ({module} is not installed): pip install 'entitynet[{extra}]'"


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (a configuration check stays cheap)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-removed package, a stub in sys.modules
        return False


def missing_extra(command: str, missing: ImportError, extra: str = "train") -> int:
    print(f"entitynet {command}: {needs(extra, missing.name)}", file=sys.stderr)
    return 2
