"""The search stage: RUN/queries.parquet -> RUN/candidates/part-NNNNN.parquet.

Web engines (commons, google, brave) go through the queries in order, ``queries_per_part`` at a
time; a part is written atomically once all its queries are answered, and every raw answer is
cached in RUN/cache/search/<engine>/, so a rerun skips finished parts and re-asks nothing. The
pool engine scans the pool twice (see pool.py) and writes parts of ``queries_per_part * per_query``
candidates. The inaturalist engine joins entities to iNaturalist's open data in one pass and cuts
parts of ``queries_per_part`` entities from its selection (see inaturalist.py).
``RUN/candidates/_fingerprint`` remembers the configuration the parts were made with: other
settings clear the folder first, so parts of two configurations never mix.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from tqdm.auto import tqdm

from entitynet import layout
from entitynet.config import Config, SearchConfig
from entitynet.http import HttpClient
from entitynet.records import Candidate, Query
from entitynet.rundir import Context, RunDir, write_text_atomic
from entitynet.search.base import AnswerCache, Engine, EngineError
from entitynet.search.commons import CommonsEngine
from entitynet.search.pool import PoolEngine, QueryIndex
from entitynet.search.web import BraveEngine, GoogleEngine
from entitynet.tables import CANDIDATE_SCHEMA, RecordWriter, candidate_to_row, read_queries

logger = logging.getLogger(__name__)



def part_path(folder: Path, number: int) -> Path:
    return folder / layout.part(number)


def selected_queries(config: SearchConfig, path: Path) -> Iterator[Query]:
    """The queries to search: those with a use of a selected kind, at most ``max_queries``."""
    kinds = set(config.kinds)
    chosen = (query for query in read_queries(path) if any(use.kind in kinds for use in query.uses))
    return itertools.islice(chosen, config.max_queries)


def make_client(config: SearchConfig) -> HttpClient:
    """The web engines' client: serial, and spaced by ``min_interval`` for Commons."""
    spacing = config.commons.min_interval if config.engine == "commons" else 0.0
    return HttpClient(config, timeout=config.timeout, contact=config.contact, min_interval=spacing)


def make_engine(config: SearchConfig, cache_dir: Path) -> Engine:
    client = make_client(config)
    cache = AnswerCache(cache_dir / config.engine)
    if config.engine == "commons":
        return CommonsEngine(client, cache, config.commons.api_url, config.commons.thumb_width, config.commons.page_size)
    if config.engine == "google":
        google = config.google
        return GoogleEngine(client, cache, google.url, google.key_env, google.cx_env, google.exclude_terms, google.image_type)
    return BraveEngine(client, cache, config.brave.url, config.brave.token_env)


def search(config: SearchConfig, run_dir: RunDir, cache: Path, key: str) -> dict[str, Any]:
    folder = run_dir.path(layout.CANDIDATES)
    stamp = folder / layout.FINGERPRINT
    if folder.exists() and (not stamp.exists() or stamp.read_text() != key):
        shutil.rmtree(folder)  # parts of another configuration
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".part-*.tmp"):  # a part being written when the run was killed
        stale.unlink()
    write_text_atomic(stamp, key)
    if config.engine == "pool":
        return _search_pool(config, run_dir, folder)
    if config.engine == "inaturalist":
        return _search_inaturalist(config, run_dir, folder)
    return _search_web(config, run_dir, folder, cache)


def _search_web(config: SearchConfig, run_dir: RunDir, folder: Path, cache: Path) -> dict[str, Any]:
    engine = make_engine(config, cache)
    counts: Counter[str] = Counter()
    queries = selected_queries(config, run_dir.path(layout.QUERIES))
    parts = iter(lambda: list(itertools.islice(queries, config.queries_per_part)), [])
    with tqdm(desc=f"search {engine.name}", unit="query", disable=None, leave=False) as progress:
        for number, part in enumerate(parts):
            target = part_path(folder, number)
            if target.exists():
                counts["parts_reused"] += 1
                progress.update(len(part))
                continue
            with RecordWriter[Candidate](target, CANDIDATE_SCHEMA, candidate_to_row) as writer:
                for query in part:
                    found = engine.search(query.text, query.natural_type, query.query_id, config.per_query)
                    counts["queries_without_candidates"] += not found
                    writer.write_all(found)
                    progress.update(1)
            counts["parts_written"] += 1
    stats = _summarise(folder, engine, counts)
    stats["http"] = engine.client.stats.as_dict()  # type: ignore[attr-defined]
    stats["answers_from_cache"] = engine.cache.hits  # type: ignore[attr-defined]
    return stats


def _search_pool(config: SearchConfig, run_dir: RunDir, folder: Path) -> dict[str, Any]:
    pool = config.pool
    engine = PoolEngine(Path(pool.path or ""), pool.max_per_entity, pool.seed, pool.url_column, pool.text_column)
    index = QueryIndex()
    for query in selected_queries(config, run_dir.path(layout.QUERIES)):
        index.add(query.query_id, query.text, [use.entity_id for use in query.uses])
    stream = engine.candidates(index)
    size = config.queries_per_part * config.per_query
    for number in itertools.count():
        chunk = list(itertools.islice(stream, size))
        if not chunk and number:
            break
        with RecordWriter[Candidate](part_path(folder, number), CANDIDATE_SCHEMA, candidate_to_row) as writer:
            writer.write_all(chunk)
        if len(chunk) < size:
            break
    stats = _summarise(folder, engine, Counter())
    stats["pool_rows"] = engine.rows
    return stats


def _search_inaturalist(config: SearchConfig, run_dir: RunDir, folder: Path) -> dict[str, Any]:
    from entitynet.search import inaturalist  # imports DuckDB, an optional dependency (the inaturalist extra)

    client = make_client(config)
    queries = selected_queries(config, run_dir.path(layout.QUERIES))
    engine, counts = inaturalist.search(config.inaturalist, set(config.kinds), queries, run_dir, folder,
                                        config.queries_per_part, client)
    entities = counts.pop("entities")
    return {**_summarise(folder, engine, Counter(counts)), "entities": entities}


def _summarise(folder: Path, engine: Any, counts: Counter[str]) -> dict[str, Any]:
    candidates, queries, licences = 0, set(), Counter()
    for part in sorted(folder.glob(layout.PART_GLOB)):
        table = pq.read_table(part, columns=["query_id", "license"])
        candidates += table.num_rows
        queries.update(table.column("query_id").to_pylist())
        licences.update(licence or "unknown" for licence in table.column("license").to_pylist())
    return {
        "engine": engine.name,
        "candidates": candidates,
        "queries_with_candidates": len(queries),
        "dropped": dict(sorted(engine.drops.items())),
        "licenses": dict(licences.most_common(20)),
        **dict(sorted(counts.items())),
    }


def check(config: Config, run_dir: RunDir) -> None:
    """Before any stage runs: the engine's keys are in the environment, the pool exists."""
    search = config.search
    needed = {"google": [search.google.key_env, search.google.cx_env], "brave": [search.brave.token_env]}
    missing = [name for name in needed.get(search.engine, []) if not os.environ.get(name, "").strip()]
    if missing:
        raise EngineError(f"search: the {search.engine} engine needs the environment variable"
                          f"{'s' if len(missing) > 1 else ''} {', '.join(missing)} (keys are read from there only)")
    if search.engine == "pool" and search.pool.path and not Path(search.pool.path).exists():
        raise EngineError(f"search: the pool {search.pool.path} does not exist (search.pool.path)")
    if search.engine == "inaturalist":
        try:
            import duckdb  # noqa: F401
        except ImportError:
            raise EngineError("search: the inaturalist engine needs DuckDB: pip install 'entitynet[inaturalist]'") from None
        metadata = search.inaturalist.metadata or ""
        if "://" not in metadata and not Path(metadata).is_dir():
            raise EngineError(f"search: {metadata} is not a folder (search.inaturalist.metadata)")


def settings(config: Config, context: Context) -> dict[str, Any]:
    return {"search": config.search}


def make(config: Config, context: Context) -> dict[str, Any]:
    # the fingerprint stamps the parts: another configuration clears them
    return search(config.search, context.run_dir, context.cache, context.fingerprint)


def summary(stats: dict[str, Any]) -> str:
    lines = [
        f"{stats.get('engine')}: {stats.get('candidates', 0)} candidates for {stats.get('queries_with_candidates', 0)} queries",
    ]
    if stats.get("dropped"):
        lines.append("  dropped: " + ", ".join(f"{k}: {v}" for k, v in stats["dropped"].items()))
    if stats.get("entities"):
        lines.append("  entities: " + ", ".join(f"{k}: {v}" for k, v in stats["entities"].items()))
    if stats.get("licenses"):
        lines.append("  licences: " + ", ".join(f"{k}: {v}" for k, v in list(stats["licenses"].items())[:8]))
    if "http" in stats:
        http = stats["http"]
        lines.append(f"  requests: {http['requests']}, retries: {http['retries']}, answers from cache: {stats.get('answers_from_cache', 0)}")
    return "\n".join(lines)
