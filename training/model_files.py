"""What a saved model folder must hold before anything loads it: its tokenizer.

Without its tokenizer files ``AutoTokenizer.from_pretrained`` does not fail: for a CLIP folder it
builds a tokenizer of two special tokens and every prompt becomes the same ids, so a model scores
near chance and nothing says why (issue 17). Every place that loads a model folder (evaluation,
conversion, the trainer's ``model.init_from``) asks ``require_tokenizer`` first, and checks what it
loaded with ``require_vocabulary`` (a Hub repo's files are not listed before loading).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TOKENIZER_CONFIG = "tokenizer_config.json"
# a tokenizer's vocabulary, in any of the forms transformers saves: the fast tokenizer's one file,
# the BPE pair CLIP's slow tokenizer reads, or a sentencepiece / wordpiece model
VOCABULARIES = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("tokenizer.model",), ("spiece.model",),
                ("sentencepiece.bpe.model",), ("vocab.txt",))


class MissingTokenizer(ValueError):
    """A model without the tokenizer it was trained with; the message names the missing files."""


def missing_tokenizer_files(folder: Path) -> list[str]:
    """The files ``folder`` lacks to hold a tokenizer ([] when it has one): tokenizer_config.json
    and a vocabulary; of the vocabularies the first form is named."""
    missing = [] if (folder / TOKENIZER_CONFIG).is_file() else [TOKENIZER_CONFIG]
    if not any(all((folder / name).is_file() for name in files) for files in VOCABULARIES):
        missing.append("tokenizer.json (or vocab.json + merges.txt)")
    return missing


def require_tokenizer(folder: str | Path) -> None:
    """Raise ``MissingTokenizer`` when the local model folder ``folder`` lacks its tokenizer files."""
    missing = missing_tokenizer_files(Path(folder))
    if missing:
        raise MissingTokenizer(
            f"{folder}: no tokenizer, missing {', '.join(missing)}. A model works only with the tokenizer it was "
            "trained with: copy its tokenizer files into the folder (our trainer writes them into OUTPUT/model)")


def require_vocabulary(tokenizer: Any, name: str) -> None:
    """Raise ``MissingTokenizer`` when a loaded tokenizer knows nothing but its special tokens."""
    ordinary = len(tokenizer) - len(set(tokenizer.all_special_tokens))
    if ordinary < 1:
        raise MissingTokenizer(f"{name}: its tokenizer has no vocabulary ({len(tokenizer)} tokens, all special): "
                               "the tokenizer files are missing or empty")
