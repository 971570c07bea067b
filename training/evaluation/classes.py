"""The classes of a zero-shot task: stable ids, each with one or more names (synonyms).

A class set is a parameter of every evaluation, never something read off a split: the same
images can be scored among all of ImageNet's classes or only its living ones, and a trainer can
score held-out images of seen entities apart from unseen entities. Ids are strings in the id space
of the images' labels (an entity id, a folder name, a label index written as text).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any


class ClassSetError(ValueError):
    """A class set that cannot be built as asked (unknown subset, empty, unreadable file)."""


@dataclass(frozen=True, slots=True)
class ClassSet:
    """Class ids in a fixed order, with the names each class is prompted by."""

    ids: tuple[str, ...]
    names: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.names):
            raise ClassSetError(f"{len(self.ids)} class ids but {len(self.names)} name lists")
        if len(set(self.ids)) != len(self.ids):
            raise ClassSetError("class ids repeat")
        nameless = [class_id for class_id, names in zip(self.ids, self.names) if not names]
        if nameless:
            raise ClassSetError(f"classes without a name: {', '.join(nameless[:5])}")

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_names(cls, names: Sequence[str | Sequence[str]], ids: Sequence[str] | None = None) -> ClassSet:
        """Classes named in order; ids default to their positions ("0", "1", ...), the id space of
        integer labels (ClassLabel, CLIP_benchmark's ``.cls``)."""
        lists = tuple((name,) if isinstance(name, str) else tuple(name) for name in names)
        return cls(tuple(ids) if ids is not None else tuple(str(i) for i in range(len(lists))), lists)

    @classmethod
    def from_mapping(cls, names: Mapping[str, Sequence[str]]) -> ClassSet:
        """Classes from {id: names}, in the mapping's order."""
        return cls(tuple(names), tuple(tuple(value) for value in names.values()))

    @classmethod
    def from_entities(cls, entities: Iterable[Mapping[str, Any]], name_format: str = "{name}",
                      aliases: bool = True) -> ClassSet:
        """EntityNet entities (the dataset's ``entities`` column: id, name, aliases, natural_type, ...)
        as classes, sorted by id; the first time an id is seen decides its names. ``name_format``
        may use any entity field ("{name}, a type of {natural_type}"); aliases, when kept, are
        formatted the same way with the alias as ``name``."""
        found: dict[str, tuple[str, ...]] = {}
        for entity in entities:
            if entity["id"] in found or not entity.get("name"):
                continue
            spellings = [entity["name"], *(entity.get("aliases") or [] if aliases else [])]
            fields = {key: value if value is not None else "" for key, value in entity.items()}
            try:
                found[entity["id"]] = tuple(dict.fromkeys(
                    name_format.format_map({**fields, "name": spelling}).strip() for spelling in spellings if spelling))
            except (KeyError, IndexError, ValueError) as error:
                raise ClassSetError(f"name format {name_format!r}: {error.args[0]!r} is not an entity field "
                                    f"({', '.join(fields)})") from None
        return cls.from_mapping(dict(sorted(found.items())))

    def subset(self, ids: Iterable[str]) -> ClassSet:
        """These classes only, in this set's order; ids it lacks are an error."""
        wanted = set(ids)
        unknown = sorted(wanted - set(self.ids))
        if unknown:
            raise ClassSetError(f"{len(unknown)} class ids are not in the class set, e.g. {', '.join(unknown[:5])}")
        keep = [n for n, class_id in enumerate(self.ids) if class_id in wanted]
        return ClassSet(tuple(self.ids[n] for n in keep), tuple(self.names[n] for n in keep))

    def renamed(self, names: Mapping[str, Sequence[str]]) -> ClassSet:
        """The same ids with other names (a class-names file keyed by id); ids it lacks keep theirs."""
        return ClassSet(self.ids, tuple(tuple(names[i]) if i in names else own for i, own in zip(self.ids, self.names)))


@dataclass(frozen=True, slots=True)
class ImageNetClass:
    index: int
    wnid: str
    name: str
    domain: str  # "living" or "other"


def imagenet_classes() -> list[ImageNetClass]:
    """ImageNet-1k's classes in label order with CLIP_benchmark's names and our WordNet domain
    (see ``entitynet.training.evaluation.imagenet``, which derives the file)."""
    table = resources.files("entitynet.training.evaluation") / "data" / "imagenet1k_classes.tsv"
    with table.open(encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle, delimiter="\t") if row and not row[0].startswith("#")]
    return [ImageNetClass(int(index), wnid, name, domain) for index, wnid, name, domain in rows[1:]]


# Named subsets a task may ask for: the ids (ImageNet label indices) each keeps.
def named_subset(name: str) -> set[str]:
    if name in ("imagenet1k-living", "imagenet1k-other"):
        domain = name.rsplit("-", 1)[1]
        return {str(c.index) for c in imagenet_classes() if c.domain == domain}
    raise ClassSetError(f"unknown class subset {name!r}: known are imagenet1k-living, imagenet1k-other")
