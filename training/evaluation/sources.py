"""Evaluation data, detected from what it is, as one stream of examples.

- an image folder with one subfolder per class (folder names are the class names, ``_`` as a
  space, a leading ordinal such as CUB's ``001.`` dropped);
- CLIP_benchmark's webdataset layout, a local folder or a Hub id (``webdataset.py``);
- one of our built datasets (rows with ``entities`` and ``alt_texts``): classes are its entities,
  retrieval runs over its alt texts;
- any other Hugging Face dataset, a local folder or a Hub id, with an image column and a label
  column (``ClassLabel`` names, a class-names file, or string labels named from row fields).

Every source is read as a stream (``streaming=True``, tar streams, a directory walk): images are
never all in memory. ``Source.read()`` may be called again and starts over.
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

from entitynet.training.evaluation.classes import ClassSet, ClassSetError
from entitynet.training.evaluation.webdataset import (WebDataset, WebDatasetError, hub_offline, local_or_hub,
                                                       looks_like_webdataset)

logger = logging.getLogger(__name__)

FORMATS = ("auto", "imagefolder", "hf", "wds", "entitynet")
DATA_SUFFIXES = {".parquet", ".arrow", ".csv", ".json", ".jsonl", ".tar", ".txt"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class SourceError(ValueError):
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
    max_images: int | None = None


@dataclass(frozen=True)
class Source:
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


def open_source(spec: DataSpec) -> Source:
    if spec.format not in FORMATS:
        raise SourceError(f"unknown format {spec.format!r}: one of {', '.join(FORMATS)}")
    kind = spec.format if spec.format != "auto" else detect(spec)
    columns = [flag for flag, value in (("--image-column", spec.image_column), ("--label-column", spec.label_column),
                                        ("--caption-column", spec.caption_column)) if value]
    if columns and kind in ("imagefolder", "wds"):
        raise SourceError(f"{spec.dataset}: {', '.join(columns)} name columns of a Hugging Face dataset; "
                          f"this is {'an image folder' if kind == 'imagefolder' else 'a webdataset'}")
    opener = {"imagefolder": _image_folder, "wds": _webdataset, "hf": _hf, "entitynet": _hf}[kind]
    if not Path(spec.dataset).exists() and hub_offline():
        raise SourceError(f"{spec.dataset}: HF_HUB_OFFLINE is set, so a Hub dataset cannot be read; give a local copy")
    try:
        source = opener(spec)
    except OSError as error:  # a file gone, the Hub unreachable
        raise SourceError(f"{spec.dataset}: cannot open it ({type(error).__name__}: {error})") from None
    if spec.max_images:
        read, limit = source.read, spec.max_images
        source = replace(source, read=lambda: itertools.islice(read(), limit), key=f"{source.key}|first {limit}")
    return source


def detect(spec: DataSpec) -> str:
    path = Path(spec.dataset)
    if path.is_dir():
        if looks_like_webdataset(*local_or_hub(str(path))):
            return "wds"
        if _is_image_folder(path):
            return "imagefolder"
        return "hf"
    if path.exists():
        raise SourceError(f"{path}: a file; give a folder or a Hub dataset id")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", spec.dataset):
        raise SourceError(f"{spec.dataset}: no such folder, and not a Hub dataset id (ORG/NAME)")
    try:
        fs, root = local_or_hub(spec.dataset)
        return "wds" if looks_like_webdataset(fs, root) else "hf"
    except WebDatasetError as error:
        raise SourceError(str(error)) from None
    except Exception as error:  # huggingface_hub and its HTTP client raise many kinds (not found, gated, network)
        raise SourceError(f"{spec.dataset}: cannot look at it on the Hub ({type(error).__name__}: {error})") from None


def display_name(dataset: str) -> str:
    """What tables and cards show: a Hub id as it is, a local folder by its name (no local paths)."""
    path = Path(dataset)
    if not path.exists():
        return dataset
    # RUN/dataset of a build is better named by its run folder than by "dataset"
    return f"{path.resolve().parent.name}/{path.resolve().name}" if path.resolve().name == "dataset" else path.resolve().name


# --- image folder -----------------------------------------------------------------------------

def _is_image_folder(path: Path) -> bool:
    """Subfolders and no data files of a Hugging Face dataset (an empty class folder still counts,
    so that it is reported as having no images)."""
    folders = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    near = [f for pattern in ("*", "*/*", "*/*/*") for f in path.glob(pattern) if f.is_file()]
    return bool(folders) and not (path / "README.md").is_file() and not any(f.suffix in DATA_SUFFIXES for f in near)


def folder_class_name(folder: str) -> str:
    """'001.Black_footed_Albatross' -> 'Black footed Albatross'; 'african_elephants' -> 'african elephants'."""
    return re.sub(r"^\d+[._-]", "", folder).replace("_", " ").strip()


def _image_folder(spec: DataSpec) -> Source:
    root = Path(spec.dataset)
    if not root.is_dir():
        raise SourceError(f"{root}: no such folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = {folder.name: sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
             for folder in folders}
    if not any(files.values()):
        raise SourceError(f"{root}: no images found (an image folder holds one subfolder per class, with "
                          f"{', '.join(sorted(IMAGE_SUFFIXES))} files)")
    classes = ClassSet(tuple(files), tuple((folder_class_name(name),) for name in files))
    classes = _renamed(classes, spec.class_names)

    def read() -> Iterator[Example]:
        for name, paths in files.items():
            for path in paths:
                yield Example(path.read_bytes(), str(path), labels=(name,))

    return Source(display_name(spec.dataset), spec.split or "-", "imagefolder", f"imagefolder|{root.resolve()}", read, classes)


# --- CLIP_benchmark webdataset ----------------------------------------------------------------

def _webdataset(spec: DataSpec) -> Source:
    fs, root = local_or_hub(spec.dataset)
    data = WebDataset(fs, root, spec.split or "test")
    try:
        data.shards()  # fail now, naming the split, not in the middle of a run
        retrieval = data.kind == "retrieval"
    except ValueError as error:
        raise SourceError(str(error)) from None
    classes = None
    if not retrieval:
        names = data.lines("classnames.txt")
        if names is None and not spec.class_names:
            raise SourceError(f"{spec.dataset}: classnames.txt is missing; pass a class-names file")
        classes = _renamed(ClassSet.from_names(names or []), spec.class_names) if names else _names_file(spec.class_names)

    def read() -> Iterator[Example]:
        for sample in data.samples():
            labels = (str(sample.label),) if sample.label is not None else ()
            yield Example(sample.image, sample.where, labels=labels, captions=sample.captions)

    return Source(display_name(spec.dataset), data.split, "wds", f"wds|{root}|{data.split}", read, classes,
                  templates=tuple(data.lines("zeroshot_classification_templates.txt") or ()) or None,
                  captions=retrieval, labels=not retrieval)


# --- Hugging Face datasets, ours included -----------------------------------------------------

def _hf(spec: DataSpec) -> Source:
    import datasets

    rows, split = _load_split(spec)
    features = rows.features or {}
    if "entities" in features and "alt_texts" in features and spec.format in ("auto", "entitynet"):
        return _built(spec, rows, split)
    if spec.format == "entitynet":
        raise SourceError(f"{spec.dataset}: not a built EntityNet dataset (no entities and alt_texts columns)")
    image_column = spec.image_column or next(
        (name for name, feature in features.items() if isinstance(feature, datasets.Image)), None)
    if image_column not in features:
        raise SourceError(f"{spec.dataset}: no image column {image_column or ''} (columns: {', '.join(features)}); "
                          "name it with --image-column")
    label_column = spec.label_column or next(
        (name for name, feature in features.items() if isinstance(feature, datasets.ClassLabel)),
        "label" if "label" in features else None)
    caption_column = spec.caption_column
    for wanted, flag in ((label_column, "--label-column"), (caption_column, "--caption-column")):
        if wanted is not None and wanted not in features:
            raise SourceError(f"{spec.dataset}: no column {wanted!r} ({flag}); columns: {', '.join(features)}")
    if label_column is None and caption_column is None:
        raise SourceError(f"{spec.dataset}: no label column found; name it with --label-column "
                          f"(columns: {', '.join(features)})")
    rows = rows.cast_column(image_column, datasets.Image(decode=False))
    label = features.get(label_column)
    classes = None
    if isinstance(label, datasets.ClassLabel):
        classes = _renamed(ClassSet.from_names(label.names), spec.class_names)
    elif label_column is not None and spec.class_names:
        classes = _names_file(spec.class_names)
    elif isinstance(label, datasets.Value) and label.dtype.startswith(("int", "uint")):
        raise SourceError(f"{spec.dataset}: the labels in {label_column!r} are numbers without names; "
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

    return Source(display_name(spec.dataset), split, "hf", _hf_key(spec, split, image_column, label_column, caption_column),
                  read, classes, captions=caption_column is not None, labels=label_column is not None)


def _built(spec: DataSpec, rows: Any, split: str) -> Source:
    import datasets

    rows = rows.cast_column("image", datasets.Image(decode=False))
    name_format = spec.name_format or "{name}"

    def read() -> Iterator[Example]:
        yield from built_examples(rows, name_format, where=f"{spec.dataset} [{split}]")

    return Source(display_name(spec.dataset), split, "entitynet", _hf_key(spec, split, "image", "entities", "alt_texts", name_format),
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
                      names=dict(zip(names.ids, names.names)))


def _load_split(spec: DataSpec) -> tuple[Any, str]:
    """The split's rows (streamed where the format allows) and its name."""
    import datasets

    try:
        if Path(spec.dataset, "state.json").is_file():  # a Dataset.save_to_disk folder
            loaded = datasets.load_from_disk(spec.dataset)
        else:
            loaded = datasets.load_dataset(spec.dataset, spec.config, streaming=True)
    except (FileNotFoundError, ValueError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as error:
        raise SourceError(f"{spec.dataset}: cannot load it as a Hugging Face dataset ({error})") from None
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        splits = list(loaded)
        split = spec.split or ("test" if "test" in splits else splits[0] if len(splits) == 1 else None)
        if split not in loaded:
            raise SourceError(f"{spec.dataset}: no split {spec.split or '(none given)'!r}; splits: {', '.join(splits)} "
                              "(choose with --split)")
        return loaded[split], split
    return loaded, spec.split or str(loaded.split or "train")


def _hf_key(spec: DataSpec, split: str, *columns: str | None) -> str:
    where = str(Path(spec.dataset).resolve()) if Path(spec.dataset).exists() else spec.dataset
    return f"hf|{where}|{spec.config}|{split}|{'|'.join(str(c) for c in columns)}"


# --- class names ------------------------------------------------------------------------------

def _names_file(path: str | None) -> ClassSet:
    if not path:
        raise SourceError("integer labels need class names: pass a class-names file")
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
            raise SourceError(f"{path}: names for classes the dataset lacks, e.g. {', '.join(unknown[:5])}")
        return classes.renamed(loaded)
    if len(loaded) != len(classes):
        raise SourceError(f"{path}: {len(loaded)} class names for {len(classes)} classes")
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
        raise SourceError(f"{path}: cannot read class names ({error})") from None
    except ClassSetError as error:
        raise SourceError(f"{path}: {error}") from None
