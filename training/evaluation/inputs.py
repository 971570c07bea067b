"""Evaluation data, as one stream of examples.

A local folder is read by what it declares, else by what it holds; stray files (notes, a plain
README, .DS_Store, a stray .csv) never count (``detect_folder``):

1. declared: webdataset shards (``SPLIT/nshards.txt``) make it CLIP_benchmark's webdataset layout
   (``webdataset.py``); a README.md whose YAML declares ``configs`` or ``dataset_info``, or
   ``save_to_disk``'s files, a Hugging Face dataset;
2. held: a Hugging Face dataset's data files (``.parquet``, ``.arrow``, an imagefolder's
   ``metadata.csv``/``.jsonl``) make it a Hugging Face dataset; subfolders of images an image
   folder: one class per subfolder, named by the folder with ``_`` as a space and a leading
   ordinal such as CUB's ``001.`` dropped (``--class-names`` renames them); subfolders without
   images are no classes (left out, and said).

Two readings on the same level, or none, are refused, naming what was found; ``--format`` chooses.
Which reading was taken, and why, is ``EvalInput.reading``. A Hub id is a webdataset or a Hugging Face
dataset. One of our built datasets (rows with ``entities`` and ``alt_texts``) has its entities as
classes and its alt texts for retrieval; any other Hugging Face dataset needs an image column and a
label column (``ClassLabel`` names, a class-names file, or string labels named from row fields).

Every source is read as a stream (``streaming=True``, tar streams, a directory walk): images are
never all in memory. ``EvalInput.read()`` may be called again and starts over.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from entitynet.hub_cards.model_card import is_hub_id
from entitynet.training.evaluation.classes import ClassSet, ClassSetError
from entitynet.training.evaluation.webdataset import (
    WebDataset,
    WebDatasetError,
    hub_offline,
    local_or_hub,
    looks_like_webdataset,
)

logger = logging.getLogger(__name__)

FORMATS = ("auto", "imagefolder", "hf", "wds", "entitynet")
READINGS = {"imagefolder": "an image folder", "hf": "a Hugging Face dataset", "wds": "a CLIP_benchmark webdataset",
            "entitynet": "a built EntityNet dataset"}
# files only a Hugging Face dataset holds: its data, save_to_disk's state, an imagefolder's metadata
HF_DATA_SUFFIXES = {".parquet", ".arrow"}
HF_MARKERS = ("state.json", "dataset_dict.json", "metadata.csv", "metadata.jsonl")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class InputError(ValueError):
    """Evaluation data that cannot be read as asked; the message names the dataset and what is wrong."""


@dataclass(slots=True)
class Example:
    """One image with its class ids and its captions. ``image`` is bytes, a ``{"bytes", "path"}``
    dict or a PIL image; ``names`` gives the names of its classes when the row carries them
    (entities), ``fields`` the row's small fields when its label is a bare string."""

    image: Any
    where: str
    labels: tuple[str, ...] = ()
    captions: tuple[str, ...] = ()
    names: Mapping[str, tuple[str, ...]] | None = None
    fields: Mapping[str, Any] | None = None  # row fields a class name can be formatted from
    lineages: Mapping[str, Mapping[str, str]] | None = None  # class id -> {rank: ancestor id}, from entities' lineage


@dataclass(frozen=True)
class DataSpec:
    """What to evaluate on, as the user names it."""

    dataset: str
    split: str | None = None
    config: str | None = None
    format: str = "auto"
    image_column: str | None = None
    label_column: str | None = None
    caption_column: str | None = None
    class_names: str | None = None  # a file: one name per line, or JSON (list, or {id: name(s)})
    name_format: str | None = None  # built datasets: class names from entity fields, "{name}, a type of {natural_type}"
    max_images: int | None = None  # None: every image
    max_captions: int | None = None  # the first N captions of each image; None: all (COCO: the paper keeps 5)
    dataset_id: str | None = None  # the Hub id a model card files results under, for a local copy (--dataset-id)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InputError(f"unknown format {self.format!r}: one of {', '.join(FORMATS)}")
        if self.dataset_id is not None and not is_hub_id(self.dataset_id):
            raise InputError(f"{self.dataset}: dataset id {self.dataset_id!r} is no Hub dataset id (ORG/NAME)")
        for name in ("max_images", "max_captions"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise InputError(f"{self.dataset}: {name} must be at least 1 (or unset for all), got {value!r}")


@dataclass(frozen=True)
class EvalInput:
    """An opened dataset: how to read it and what is known before reading."""

    name: str
    split: str
    format: str
    key: str  # what makes two sources the same images (the feature cache's key)
    read: Callable[[], Iterator[Example]]
    classes: ClassSet | None = None  # None: the classes are the labels the examples carry
    templates: tuple[str, ...] | None = None
    captions: bool = False
    labels: bool = True
    reading: str = ""  # how it was read and why, for the user: "an image folder (8 class folders)"


def open_input(spec: DataSpec) -> EvalInput:
    why = f"--format {spec.format}"
    kind = spec.format
    if kind == "auto":
        kind, why = detect(spec)
    columns = [flag for flag, value in (("--image-column", spec.image_column), ("--label-column", spec.label_column),
                                        ("--caption-column", spec.caption_column)) if value]
    if columns and kind in ("imagefolder", "wds"):
        raise InputError(f"{spec.dataset}: {', '.join(columns)} name columns of a Hugging Face dataset; "
                          f"this is {READINGS[kind]} ({why})")
    opener = {"imagefolder": _image_folder, "wds": _webdataset, "hf": _hf, "entitynet": _hf}[kind]
    if not Path(spec.dataset).exists() and hub_offline():
        raise InputError(f"{spec.dataset}: HF_HUB_OFFLINE is set, so a Hub dataset cannot be read; give a local copy")
    try:
        source = opener(spec)
    except OSError as error:  # a file gone, the Hub unreachable
        raise InputError(f"{spec.dataset}: cannot open it ({type(error).__name__}: {error})") from None
    # the reader may add how it named the classes
    source = replace(source, reading="; ".join(filter(None, [f"{READINGS[source.format]} ({why})", source.reading])))
    if spec.max_images is not None:
        read, limit = source.read, spec.max_images
        source = replace(source, read=lambda: itertools.islice(read(), limit), key=f"{source.key}|first {limit}")
    if spec.max_captions is not None:
        source = replace(source, read=_first_captions(source.read, spec.max_captions),
                         key=f"{source.key}|captions {spec.max_captions}")
    return source


def _first_captions(read: Callable[[], Iterator[Example]], limit: int) -> Callable[[], Iterator[Example]]:
    """``read`` with each example's captions cut to the first ``limit``."""
    def first() -> Iterator[Example]:
        for example in read():
            yield replace(example, captions=example.captions[:limit])
    return first


def detect(spec: DataSpec) -> tuple[str, str]:
    """The format of ``spec.dataset`` and why it was chosen."""
    path = Path(spec.dataset)
    if path.is_dir():
        return detect_folder(path)
    if path.exists():
        raise InputError(f"{path}: a file; give a folder or a Hub dataset id")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", spec.dataset):
        raise InputError(f"{spec.dataset}: no such folder, and not a Hub dataset id (ORG/NAME)")
    try:
        fs, root = local_or_hub(spec.dataset)
        if looks_like_webdataset(fs, root):
            return "wds", "a Hub repo in CLIP_benchmark's layout"
        return "hf", "a Hub repo"
    except WebDatasetError as error:
        raise InputError(str(error)) from None
    except Exception as error:  # huggingface_hub and its HTTP client raise many kinds (not found, gated, network)
        raise InputError(f"{spec.dataset}: cannot look at it on the Hub ({type(error).__name__}: {error})") from None


def detect_folder(path: Path) -> tuple[str, str]:
    """A local folder's format by the rules of the module docstring, and the evidence for it.
    Only files that say what a folder is count; anything else beside them is ignored. A layout
    the folder declares (webdataset shards, a dataset card's configs, save_to_disk's files) comes
    before what its files suggest (data files, subfolders of images)."""
    declared = {kind: found for kind, found in (("wds", _shards(path)), ("hf", _declared_hf(path))) if found}
    evidence = declared or {kind: found for kind, found in (("hf", _hf_files(path)),
                                                            ("imagefolder", _class_folders(path))) if found}
    if len(evidence) == 1:
        return next(iter(evidence.items()))
    if evidence:
        found = "; ".join(f"{READINGS[kind]}: {why}" for kind, why in evidence.items())
        raise InputError(f"{path}: could be read as {' or as '.join(READINGS[k] for k in evidence)} ({found}); "
                          f"choose with --format {' or --format '.join(evidence)}")
    subfolders = [p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    images = "no images found in its subfolders" if subfolders else "no subfolders of images"
    raise InputError(f"{path}: cannot tell how to read it: {images} (an image folder holds one subfolder per class, "
                      f"with {', '.join(sorted(IMAGE_SUFFIXES))} files), no Hugging Face data files (.parquet, .arrow, "
                      "a README.md declaring configs) and no webdataset shards (SPLIT/nshards.txt); "
                      "if it is one of these, say which with --format")


def _declared_hf(path: Path) -> str:
    """Why ``path`` is a Hugging Face dataset by its own statement, or ''."""
    for marker in ("state.json", "dataset_dict.json"):
        if (path / marker).is_file():
            return f"{marker}: saved with save_to_disk"
    card = path / "README.md"
    if card.is_file():
        header = re.match(r"---\s*\n(.*?)\n---", card.read_text(encoding="utf-8", errors="replace"), re.DOTALL)
        keys = re.findall(r"^(configs|dataset_info):", header.group(1), re.MULTILINE) if header else []
        if keys:
            return f"its README.md declares {keys[0]}"
    return ""


def _hf_files(path: Path) -> str:
    found = sorted({f.name if f.name in HF_MARKERS else f"*{f.suffix}"
                    for pattern in ("*", "*/*", "*/*/*") for f in path.glob(pattern)
                    if f.is_file() and (f.suffix in HF_DATA_SUFFIXES or (f.parent == path and f.name in HF_MARKERS))})
    return f"{', '.join(found)} files" if found else ""


def _shards(path: Path) -> str:
    found = sorted(f.parent.name for f in path.glob("*/nshards.txt"))
    return f"shards of split {', '.join(found)}" if found else ""


def _class_folders(path: Path) -> str:
    folders = [folder for folder in _subfolders(path) if next(_images(folder), None)]
    return f"{len(folders)} class folders of images" if folders else ""


def _subfolders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> Iterator[Path]:
    """The image files under ``folder``, in the order of the walk; hidden ones (macOS's ``._x.jpg``) are none."""
    return (f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
            and not any(part.startswith(".") for part in f.relative_to(folder).parts))


def display_name(dataset: str) -> str:
    """What tables and cards show: a Hub id as it is, a local folder by its name (no local paths)."""
    path = Path(dataset)
    if not path.exists():
        return dataset
    # RUN/dataset of a build is better named by its run folder than by "dataset"
    return f"{path.resolve().parent.name}/{path.resolve().name}" if path.resolve().name == "dataset" else path.resolve().name


# --- image folder -----------------------------------------------------------------------------

def folder_class_name(folder: str) -> str:
    """'001.Black_footed_Albatross' -> 'Black footed Albatross'; 'african_elephants' -> 'african elephants'."""
    return re.sub(r"^\d+[._-]", "", folder).replace("_", " ").strip()


def _image_folder(spec: DataSpec) -> EvalInput:
    root = Path(spec.dataset)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    files = {folder.name: sorted(_images(folder)) for folder in _subfolders(root)}
    if not any(files.values()):
        raise InputError(f"{root}: no images found (an image folder holds one subfolder per class, with "
                          f"{', '.join(sorted(IMAGE_SUFFIXES))} files)")
    # a subfolder without images is no class (notes, a __MACOSX folder, a Hub layout's data/): left out, and said
    empty = [name for name, paths in files.items() if not paths]
    files = {name: paths for name, paths in files.items() if paths}
    classes = ClassSet(tuple(files), tuple((folder_class_name(name),) for name in files))
    classes = _renamed(classes, spec.class_names)
    naming = f"class names from {spec.class_names}" if spec.class_names else \
        "class names: folder names, '_' as a space, a leading number like '001.' dropped"
    if empty:
        naming += f"; subfolders without images left out: {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}"

    def read() -> Iterator[Example]:
        for name, paths in files.items():
            for path in paths:
                # read by the decoder: a file that cannot be read is named like one that cannot be decoded
                yield Example({"bytes": None, "path": str(path)}, str(path), labels=(name,))

    return EvalInput(display_name(spec.dataset), spec.split or "-", "imagefolder", f"imagefolder|{root.resolve()}", read,
                  classes, reading=naming)


# --- CLIP_benchmark webdataset ----------------------------------------------------------------

def _webdataset(spec: DataSpec) -> EvalInput:
    fs, root = local_or_hub(spec.dataset)
    data = WebDataset(fs, root, spec.split or "test")
    try:
        data.shards()  # fail now, naming the split, not in the middle of a run
        retrieval = data.kind == "retrieval"
    except ValueError as error:
        raise InputError(str(error)) from None
    classes = None
    if not retrieval:
        names = data.lines("classnames.txt")
        if names is None and not spec.class_names:
            raise InputError(f"{spec.dataset}: classnames.txt is missing; pass a class-names file")
        classes = _renamed(ClassSet.from_names(names or []), spec.class_names) if names else _names_file(spec.class_names)

    def read() -> Iterator[Example]:
        for sample in data.samples():
            labels = (str(sample.label),) if sample.label is not None else ()
            yield Example(sample.image, sample.where, labels=labels, captions=sample.captions)

    return EvalInput(display_name(spec.dataset), data.split, "wds", f"wds|{root}|{data.split}", read, classes,
                  templates=tuple(data.lines("zeroshot_classification_templates.txt") or ()) or None,
                  captions=retrieval, labels=not retrieval)


# --- Hugging Face datasets, ours included -----------------------------------------------------

def _hf(spec: DataSpec) -> EvalInput:
    import datasets

    rows, split = _load_split(spec)
    features = rows.features or {}
    if "entities" in features and "alt_texts" in features and spec.format in ("auto", "entitynet"):
        return _built(spec, rows, split)
    if spec.format == "entitynet":
        raise InputError(f"{spec.dataset}: not a built EntityNet dataset (no entities and alt_texts columns)")
    image_column = spec.image_column or next(
        (name for name, feature in features.items() if isinstance(feature, datasets.Image)), None)
    if image_column not in features:
        raise InputError(f"{spec.dataset}: no image column {image_column or ''} (columns: {', '.join(features)}); "
                          "name it with --image-column")
    label_column = spec.label_column or next(
        (name for name, feature in features.items() if isinstance(feature, datasets.ClassLabel)),
        "label" if "label" in features else None)
    caption_column = spec.caption_column
    for wanted, flag in ((label_column, "--label-column"), (caption_column, "--caption-column")):
        if wanted is not None and wanted not in features:
            raise InputError(f"{spec.dataset}: no column {wanted!r} ({flag}); columns: {', '.join(features)}")
    if label_column is None and caption_column is None:
        raise InputError(f"{spec.dataset}: no label column found; name it with --label-column "
                          f"(columns: {', '.join(features)})")
    rows = rows.cast_column(image_column, datasets.Image(decode=False))
    label = features.get(label_column)
    classes = None
    if isinstance(label, datasets.ClassLabel):
        classes = _renamed(ClassSet.from_names(label.names), spec.class_names)
    elif label_column is not None and spec.class_names:
        classes = _names_file(spec.class_names)
    elif isinstance(label, datasets.Value) and label.dtype.startswith(("int", "uint")):
        raise InputError(f"{spec.dataset}: the labels in {label_column!r} are numbers without names; "
                          "pass --class-names FILE (one name per line, in label order)")

    def read() -> Iterator[Example]:
        for n, row in enumerate(rows):
            labels = (str(row[label_column]),) if label_column is not None and row[label_column] is not None else ()
            captions = ()
            if caption_column is not None:
                value = row[caption_column]
                captions = tuple(value) if isinstance(value, list) else (value,) if value else ()
            # string labels: keep the row's small fields, a task may name its classes from them
            fields = {k: v for k, v in row.items() if isinstance(v, (str, int, float, bool))} if classes is None else None
            yield Example(row[image_column], f"{spec.dataset} [{split}] row {n}", labels, captions, fields=fields)

    return EvalInput(display_name(spec.dataset), split, "hf", _hf_key(spec, split, image_column, label_column, caption_column),
                  read, classes, captions=caption_column is not None, labels=label_column is not None)


def _built(spec: DataSpec, rows: Any, split: str) -> EvalInput:
    import datasets

    rows = rows.cast_column("image", datasets.Image(decode=False))
    name_format = spec.name_format or "{name}"

    def read() -> Iterator[Example]:
        yield from built_examples(rows, name_format, where=f"{spec.dataset} [{split}]")

    return EvalInput(display_name(spec.dataset), split, "entitynet", _hf_key(spec, split, "image", "entities", "alt_texts", name_format),
                  read, None, templates=None, captions=True)


def built_examples(rows: Iterable[Mapping[str, Any]], name_format: str = "{name}", where: str = "rows",
                   aliases: bool = True) -> Iterator[Example]:
    """Rows of a built EntityNet dataset as examples: labels are the row's entity ids, names its
    entities' names (and aliases), captions its alt texts."""
    for n, row in enumerate(rows):
        entities = row.get("entities") or []
        names = ClassSet.from_entities(entities, name_format, aliases)
        yield Example(row["image"], f"{where} row {n} ({row.get('image_id', '?')})", labels=names.ids,
                      captions=tuple(text for text in row.get("alt_texts") or [] if text and text.strip()),
                      names=dict(zip(names.ids, names.names)), lineages=lineages_of(entities))


def lineages_of(entities: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Entity id -> {rank: ancestor id} from the entities' ``lineage`` field (built datasets made
    before the field existed have none: {})."""
    return {entity["id"]: {item["rank"]: item["id"] for item in entity.get("lineage") or []
                           if item.get("rank") and item.get("id")}
            for entity in entities if entity.get("id")}


def _load_split(spec: DataSpec) -> tuple[Any, str]:
    """The split's rows (streamed where the format allows) and its name."""
    import datasets

    try:
        if any(Path(spec.dataset, marker).is_file() for marker in ("state.json", "dataset_dict.json")):  # save_to_disk
            loaded = datasets.load_from_disk(spec.dataset)
        else:
            loaded = datasets.load_dataset(spec.dataset, spec.config, streaming=True)
    except (FileNotFoundError, ValueError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as error:
        raise InputError(f"{spec.dataset}: cannot load it as a Hugging Face dataset ({error})") from None
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        splits = list(loaded)
        split = spec.split or ("test" if "test" in splits else splits[0] if len(splits) == 1 else None)
        if split not in loaded:
            raise InputError(f"{spec.dataset}: no split {spec.split or '(none given)'!r}; splits: {', '.join(splits)} "
                              "(choose with --split)")
        return loaded[split], split
    return loaded, spec.split or str(loaded.split or "train")


def _hf_key(spec: DataSpec, split: str, *columns: str | None) -> str:
    where = str(Path(spec.dataset).resolve()) if Path(spec.dataset).exists() else spec.dataset
    return f"hf|{where}|{spec.config}|{split}|{'|'.join(str(c) for c in columns)}"


# --- class names ------------------------------------------------------------------------------

def _names_file(path: str | None) -> ClassSet:
    if not path:
        raise InputError("integer labels need class names: pass a class-names file")
    loaded = _read_names(path)
    if isinstance(loaded, dict):
        return ClassSet.from_mapping(loaded)
    return ClassSet.from_names(loaded)


def _renamed(classes: ClassSet, path: str | None) -> ClassSet:
    if not path:
        return classes
    loaded = _read_names(path)
    if isinstance(loaded, dict):
        unknown = sorted(set(loaded) - set(classes.ids))
        if unknown:
            raise InputError(f"{path}: names for classes the dataset lacks, e.g. {', '.join(unknown[:5])}")
        return classes.renamed(loaded)
    if len(loaded) != len(classes):
        raise InputError(f"{path}: {len(loaded)} class names for {len(classes)} classes")
    return ClassSet(classes.ids, tuple(loaded))


def _read_names(path: str) -> list[tuple[str, ...]] | dict[str, tuple[str, ...]]:
    """Text: one class per line. JSON: a list (each a name or a list of synonyms) or {id: name(s)}."""
    def names(value: Any) -> tuple[str, ...]:
        return (value,) if isinstance(value, str) else tuple(value)

    try:
        text = Path(path).read_text(encoding="utf-8")
        if path.endswith(".json"):
            loaded = json.loads(text)
            if isinstance(loaded, dict):
                return {str(key): names(value) for key, value in loaded.items()}
            return [names(value) for value in loaded]
        return [(line.strip(),) for line in text.splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as error:
        raise InputError(f"{path}: cannot read class names ({error})") from None
    except ClassSetError as error:
        raise InputError(f"{path}: {error}") from None
