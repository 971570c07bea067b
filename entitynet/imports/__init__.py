"""``entitynet import``: a door in from outside (DESIGN.md). It writes the run's entities, natural
types, queries and candidates from a released dataset (``release.py``: the authors' EntityNet) or
a plain URL list (``url_list.py``), so ``entitynet download`` and ``entitynet build`` continue as
after a search. ``stage.py`` wires them into the run directory.
"""

from __future__ import annotations

from entitynet.rundir import StageError


class ImportProblem(StageError):
    """The source cannot be imported: the message names the file or split and what is wrong."""
