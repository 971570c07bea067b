"""Harvest entities from WordNet 3.0 through nltk: the hyponyms of configured root synsets.

Finding the data: ``kg.wordnet.data_dir`` if given, else nltk's own search path (where
``nltk.download("wordnet")`` puts it), else Debian's ``wordnet-base`` + ``wordnet-sense-index``
files in /usr/share/wordnet, which are copied once into the EntityNet cache in the layout nltk
reads (nltk also needs a ``lexnames`` table Debian ships only as a man page; it is fixed by the
WordNet 3.0 format, so we write it).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from entitynet.config import WordnetConfig
from entitynet.records import Ancestor, Entity
from entitynet.rundir import StageError

logger = logging.getLogger(__name__)

DEBIAN_WORDNET = Path("/usr/share/wordnet")
# WordNet 3.0 lexicographer files (lexnames(5WN)): number, name, syntactic category.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_DEBIAN_FILES = ("index.noun", "data.noun", "index.sense", "noun.exc", "cntlist.rev")
INSTALL_HINT = (
    "WordNet 3.0 data is missing. Install it with one of:\n"
    "  python -c \"import nltk; nltk.download('wordnet')\"      (needs internet)\n"
    "  sudo apt-get install wordnet-base wordnet-sense-index    (Debian/Ubuntu; found automatically)\n"
    "or point kg.wordnet.data_dir at a folder holding corpora/wordnet."
)
_BINOMIAL = re.compile(r"([A-Z][a-z]+) [a-z][a-z-]+")


class WordNetMissing(StageError):
    """WordNet data could not be found; the message says how to install it."""


def cache_home() -> Path:
    """EntityNet's per-user cache (``ENTITYNET_CACHE``, else ``~/.cache/entitynet``)."""
    configured = os.environ.get("ENTITYNET_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "entitynet"


def load_wordnet(data_dir: str | None = None) -> Any:
    """An nltk ``WordNetCorpusReader`` over WordNet 3.0, from wherever the data is."""
    import nltk

    folders = [Path(data_dir)] if data_dir else []
    if not data_dir:
        try:
            return _reader(nltk.data.find("corpora/wordnet"))
        except LookupError:
            pass
        if (DEBIAN_WORDNET / "data.noun").exists():
            folders.append(_nltk_copy_of_debian(cache_home() / "nltk_data"))
    for folder in folders:
        if (folder / "corpora" / "wordnet" / "data.noun").exists():
            # nltk only opens corpora below a folder on its search path.
            if str(folder) not in nltk.data.path:
                nltk.data.path.append(str(folder))
            return _reader(nltk.data.find("corpora/wordnet", paths=[str(folder)]))
    where = f" in {data_dir}/corpora/wordnet" if data_dir else ""
    raise WordNetMissing(f"{INSTALL_HINT}\n(looked{where or ' on nltk.data.path and in ' + str(DEBIAN_WORDNET)})")


def _reader(root: Any) -> Any:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    with warnings.catch_warnings():
        # Without the Open Multilingual Wordnet nltk warns; we only read English lemmas.
        warnings.filterwarnings("ignore", message="The multilingual functions are not available")
        return WordNetCorpusReader(root, None)


def _nltk_copy_of_debian(root: Path) -> Path:
    """Debian's files, copied (nltk refuses symlinks out of its path) with a lexnames table."""
    target = root / "corpora" / "wordnet"
    if (target / "lexnames").exists():
        return root
    missing = [name for name in _DEBIAN_FILES if not (DEBIAN_WORDNET / name).exists()]
    if missing:
        raise WordNetMissing(f"{INSTALL_HINT}\n({DEBIAN_WORDNET} lacks {', '.join(missing)})")
    staging = target.with_name(f".wordnet-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for source in DEBIAN_WORDNET.iterdir():
        if source.is_file():
            shutil.copyfile(source, staging / source.name)
    table = "".join(
        f"{number:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for number, name in enumerate(LEXNAMES)
    )
    (staging / "lexnames").write_text(table)
    try:
        staging.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("prepared WordNet from %s for nltk in %s", DEBIAN_WORDNET, target)
    return root


def synset_id(synset: Any) -> str:
    return f"wn:{synset.name()}"


def lemma_text(name: str) -> str:
    return name.replace("_", " ")


class WordNetHarvester:
    """Synsets under each root, minus blacklisted subtrees, most frequent first."""

    def __init__(self, reader: Any, config: WordnetConfig, limit_per_root: int | None = None) -> None:
        self.reader = reader
        self.config = config
        self.limit = limit_per_root
        self.per_root: Counter[str] = Counter()

    def entities(self) -> Iterator[Entity]:
        blacklist = {self._synset(name, "blacklist") for name in self.config.blacklist}
        living_roots = {self._synset(name, "living_roots") for name in self.config.living_roots}
        seen: set[Any] = set()
        for root_name in self.config.roots:
            root = self._synset(root_name, "roots")
            living = bool(living_roots & ({root} | set(root.closure(_hypernyms))))
            members = [s for s in _descendants(root, blacklist) if s not in seen]
            # Most used first (SemCor counts of the lemmas), ties by name: stable across runs.
            members.sort(key=lambda s: (-sum(lemma.count() for lemma in s.lemmas()), s.name()))
            if self.limit is not None:
                members = members[: self.limit]
            seen.update(members)
            for synset in members:
                self.per_root[synset_id(root)] += 1
                yield self._entity(synset, root, living)

    def _synset(self, name: str, key: str) -> Any:
        from nltk.corpus.reader.wordnet import WordNetError

        try:
            return self.reader.synset(name)
        except (WordNetError, ValueError):
            raise WordNetMissing(f"kg.wordnet.{key}: WordNet has no synset {name!r}") from None

    def _entity(self, synset: Any, root: Any, living: bool) -> Entity:
        names = [lemma_text(name) for name in synset.lemma_names()]
        return Entity(
            id=synset_id(synset),
            source="wordnet",
            name=names[0],
            domain="living" if living else "other",
            root=synset_id(root),
            aliases=names[1:],
            lemmas=names,
            description=synset.definition() or None,
            taxon_name=taxon_name(synset, names),
            ancestors=_ancestors(synset),
        )


def taxon_name(synset: Any, names: list[str]) -> str | None:
    """The binomial among the lemmas, when its genus is the synset's member holonym.

    ``lion.n.01`` has lemma "Panthera leo" and is a member of ``panthera.n.01`` ("Panthera"):
    requiring the genus keeps look-alikes such as "Bengal tiger" out.
    """
    genera = {lemma_text(name) for holonym in synset.member_holonyms() for name in holonym.lemma_names()}
    for name in names:
        match = _BINOMIAL.fullmatch(name)
        if match and match.group(1) in genera:
            return name
    return None


def _hypernyms(synset: Any) -> list[Any]:
    return synset.hypernyms() + synset.instance_hypernyms()


def _descendants(root: Any, blacklist: set[Any]) -> list[Any]:
    found: list[Any] = []
    seen = {root}
    stack = [root]
    while stack:
        synset = stack.pop()
        for child in synset.hyponyms() + synset.instance_hyponyms():
            if child in seen or child in blacklist:
                continue
            seen.add(child)
            found.append(child)
            stack.append(child)
    return found


def _ancestors(synset: Any, hops: int = 3) -> list[Ancestor]:
    nearest: dict[Any, int] = {}
    frontier = [synset]
    for distance in range(1, hops + 1):
        frontier = [parent for node in frontier for parent in _hypernyms(node)]
        for parent in frontier:
            nearest.setdefault(parent, distance)
    ordered = sorted(nearest.items(), key=lambda pair: (pair[1], pair[0].name()))
    return [Ancestor(synset_id(s), lemma_text(s.lemma_names()[0]), None, hops) for s, hops in ordered]
