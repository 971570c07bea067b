"""Search a local image-text pool instead of the web: MetaCLIP-style matching and balancing.

A pool is any collection of (url, text) rows: parquet files with a url and a text column
(img2dataset's input or output, LAION-style metadata), JSON-lines files with ``url`` and
``text``/``caption``, or webdataset tar shards whose samples carry a ``.json`` with ``url`` and
``caption``/``text``. Every query is indexed by its word sequence;
each pool text is split into words once and every n-gram of the indexed lengths is looked up,
so matching costs O(words x lengths) per row whatever the number of queries (a multi-pattern
matcher on word boundaries, not a loop over queries).

Balancing (MetaCLIP, Xu et al. 2023): a first pass counts the rows that match each entity; the
second keeps a row for an entity with probability min(1, max_per_entity / count), decided by a
hash of (url, entity, seed), so frequent entities are capped, rare ones kept whole, and reruns
agree. Both passes stream: memory holds the query index and one counter per entity. Rows that
cannot be used (no URL, no text, a sample that is not JSON, a failed img2dataset download) are
counted by reason in the stage's ``dropped``, whatever the pool's format; none stops the run.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from entitynet.records import Candidate
from entitynet.typed_config import ConfigError

_WORD = re.compile(r"\w+(?:['’-]\w+)*")
URL_COLUMNS = ("url", "URL", "image_url")
TEXT_COLUMNS = ("text", "caption", "TEXT", "alt", "alt_text")


def words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(unicodedata.normalize("NFKC", text).lower()))


class QueryIndex:
    """Queries by their word sequence, with the entities each one serves."""

    def __init__(self) -> None:
        self.by_words: dict[tuple[str, ...], list[str]] = defaultdict(list)  # words -> query ids
        self.entities: dict[str, tuple[str, ...]] = {}  # query id -> entity ids
        self.lengths: set[int] = set()

    def add(self, query_id: str, text: str, entity_ids: list[str]) -> None:
        key = words(text)
        if not key:
            return
        self.by_words[key].append(query_id)
        self.entities[query_id] = tuple(sorted(set(entity_ids)))
        self.lengths.add(len(key))

    def matches(self, text: str) -> set[str]:
        """Query ids whose whole words occur, in order and adjacent, in ``text``."""
        tokens = words(text)
        found: set[str] = set()
        for n in self.lengths:
            for start in range(len(tokens) - n + 1):
                hit = self.by_words.get(tokens[start : start + n])
                if hit:
                    found.update(hit)
        return found


def pool_rows(path: Path, url_column: str | None = None, text_column: str | None = None,
              drops: Counter[str] | None = None) -> Iterator[tuple[str, str]]:
    """(url, text) of every usable row of a pool: a parquet file, a .tar shard, a .jsonl file, or a
    folder of them. Rows that cannot be used are counted in ``drops`` by reason (``no_url``,
    ``no_text``, ``bad_json``, ``failed_download`` for img2dataset's failures), never fatal."""
    drops = Counter() if drops is None else drops
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".parquet", ".tar", ".jsonl"))
        if not files:
            raise ConfigError(f"search.pool.path: {path} holds no .parquet, .jsonl or .tar files")
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(f"search.pool.path: {path} does not exist")
    for file in files:
        if file.suffix == ".tar":
            samples = _tar_samples(file)
        elif file.suffix == ".jsonl":
            samples = _jsonl_samples(file)
        else:
            samples = _parquet_samples(file, url_column, text_column)
        for url, text in samples:
            reason = _unusable(url, text)
            if reason:
                drops[reason] += 1
            else:
                yield url, text


_BAD_JSON, _FAILED = object(), object()  # in place of a URL: a sample that is not a JSON object, an img2dataset failure
Sample = tuple[Any, Any]


def _unusable(url: Any, text: Any) -> str | None:
    if url is _BAD_JSON:
        return "bad_json"
    if url is _FAILED:
        return "failed_download"
    return "no_url" if not url else "no_text" if not text else None


def _parquet_samples(file: Path, url_column: str | None, text_column: str | None) -> Iterator[Sample]:
    parquet = pq.ParquetFile(file)
    names = parquet.schema_arrow.names
    url = url_column or next((c for c in URL_COLUMNS if c in names), None)
    text = text_column or next((c for c in TEXT_COLUMNS if c in names), None)
    if url not in names or text not in names:
        raise ConfigError(
            f"search.pool: {file} has columns {names}; set search.pool.url_column and text_column"
        )
    # img2dataset's output parquet lists failed downloads too: keep its successes only.
    status = "status" if "status" in names else None
    for batch in parquet.iter_batches(batch_size=50_000, columns=[url, text] + ([status] if status else [])):
        statuses = batch.column(2).to_pylist() if status else [None] * batch.num_rows
        for row_url, row_text, row_status in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), statuses):
            yield (row_url, row_text) if row_status in (None, "success") else (_FAILED, None)


def _json_sample(data: str | bytes) -> Sample:
    try:
        sample = json.loads(data)
    except ValueError:
        return _BAD_JSON, None
    if not isinstance(sample, dict):
        return _BAD_JSON, None
    return sample.get("url"), sample.get("text") or sample.get("caption")


def _jsonl_samples(file: Path) -> Iterator[Sample]:
    with file.open(encoding="utf-8") as lines:
        yield from (_json_sample(line) for line in lines if line.strip())


def _tar_samples(file: Path) -> Iterator[Sample]:
    with tarfile.open(file) as archive:
        for member in archive:
            handle = archive.extractfile(member) if member.name.endswith(".json") else None
            if handle is not None:
                yield _json_sample(handle.read())


def keep(url: str, entity_id: str, probability: float, seed: int) -> bool:
    if probability >= 1.0:
        return True
    digest = hashlib.blake2b(f"{seed}|{entity_id}|{url}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < probability


class PoolEngine:
    """Two streaming passes over the pool; see the module docstring."""

    name = "pool"

    def __init__(self, path: Path, max_per_entity: int, seed: int = 0,
                 url_column: str | None = None, text_column: str | None = None) -> None:
        self.path = path
        self.max_per_entity = max_per_entity
        self.seed = seed
        self.url_column, self.text_column = url_column, text_column
        self.drops: Counter[str] = Counter()
        self.rows = 0

    def candidates(self, index: QueryIndex) -> Iterator[Candidate]:
        per_entity: Counter[str] = Counter()
        for _, text in pool_rows(self.path, self.url_column, self.text_column, Counter()):  # the second pass counts drops
            entities = {e for query_id in index.matches(text) for e in index.entities[query_id]}
            per_entity.update(entities)
        ranks: Counter[str] = Counter()
        for url, text in pool_rows(self.path, self.url_column, self.text_column, self.drops):
            self.rows += 1
            for query_id in sorted(index.matches(text)):
                kept = [e for e in index.entities[query_id]
                        if keep(url, e, self.max_per_entity / per_entity[e], self.seed)]
                if not kept:
                    self.drops["balanced_out"] += 1
                    continue
                yield Candidate(url=url, query_id=query_id, engine=self.name, rank=ranks[query_id], text=text)
                ranks[query_id] += 1
