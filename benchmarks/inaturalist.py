"""The inaturalist engine at scale: index iNaturalist-format metadata, join 1,000 entities.

A metadata set in the published format (tab-separated, gzip, unquoted, the published columns plus
observations' ``anomaly_score``) is generated once with DuckDB: ``--observations`` observations
(default 10 million) of ``--species`` species in ``--genera`` genera under a few families, with a
skew (a few species have most observations), 1.5 photos per observation (every licence, positions
0..), one observer per 20 observations. Then, each in a fresh process so peak RSS is its own:

1. ``index``: the engine's ``prepare`` from the .csv.gz (the one-time conversion to parquet);
2. ``join``: 1,000 entities (800 species by iNaturalist id, 150 by name and rank, 50 genera by
   name, taking their species) matched, selected in one pass and cut into candidates of 500
   entities a part, as the stage does, default settings (research grade; CC0, CC-BY, CC-BY-SA;
   100 per entity);
3. ``rerun``: the same with the index already there (what a second run or a changed setting costs).

Targets (issue 20): peak RSS under 2 GB; the rerun in seconds.

    python benchmarks/inaturalist.py                              # 10M observations, 15M photos
    python benchmarks/inaturalist.py --observations 1000000       # a quick look
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAMILIES = 40


def generate(folder: Path, observations: int, species: int, genera: int) -> None:
    import duckdb

    folder.mkdir(parents=True, exist_ok=True)
    connection = duckdb.connect()
    out = "(FORMAT csv, DELIMITER '\t', HEADER true, COMPRESSION gzip)"
    # ids: families 1000.., genera 100000.., species 1000000..; ancestry from Life (48460) down.
    connection.execute(f"""COPY (
        SELECT 48460 AS taxon_id, NULL::VARCHAR AS ancestry, 100 AS rank_level, 'stateofmatter' AS rank, 'Life' AS name, 'true' AS active
        UNION ALL SELECT 1, '48460', 70, 'kingdom', 'Animalia', 'true'
        UNION ALL SELECT 1000 + i, '48460/1', 30, 'family', 'Familia' || i || 'idae', 'true' FROM range({FAMILIES}) t(i)
        UNION ALL SELECT 100000 + g, '48460/1/' || (1000 + g % {FAMILIES}), 20, 'genus', 'Genus' || g, 'true'
            FROM range({genera}) t(g)
        UNION ALL SELECT 1000000 + s, '48460/1/' || (1000 + (s % {genera}) % {FAMILIES}) || '/' || (100000 + s % {genera}),
            10, 'species', 'Genus' || (s % {genera}) || ' species' || s, CASE WHEN s % 50 = 49 THEN 'false' ELSE 'true' END
            FROM range({species}) t(s)
        ) TO '{folder / "taxa.csv.gz"}' {out}""")
    # skewed: species index = S * u^2 puts a quarter of the observations on the first 6% of species
    connection.execute(f"""COPY (
        SELECT 'obs-' || i AS observation_uuid, i % {max(1, observations // 20)} AS observer_id,
               round(-60 + (hash(i, 1) % 12000) / 100.0, 4) AS latitude, round(-180 + (hash(i, 2) % 36000) / 100.0, 4) AS longitude,
               hash(i, 3) % 100 AS positional_accuracy,
               1000000 + CAST(floor({species} * pow((hash(i, 4) % 1000000) / 1e6, 2)) AS BIGINT) AS taxon_id,
               ['research', 'research', 'needs_id', 'casual'][CAST(1 + hash(i, 5) % 4 AS BIGINT)] AS quality_grade,
               '20' || (10 + i % 14) || '-0' || (1 + i % 9) || '-1' || (i % 9) AS observed_on,
               round((hash(i, 6) % 1000) / 1000.0, 3) AS anomaly_score
        FROM range({observations}) t(i)) TO '{folder / "observations.csv.gz"}' {out}""")
    # 1.5 photos per observation: every observation one (position 0), every other a second (position 1)
    licences = "['CC0', 'CC-BY', 'CC-BY-NC', 'CC-BY-SA', 'CC-BY-ND', 'CC-BY-NC-SA', 'CC-BY-NC-ND', 'CC-BY-NC']"
    connection.execute(f"""COPY (
        SELECT 'uuid-' || p AS photo_uuid, p AS photo_id, 'obs-' || o AS observation_uuid,
               o % {max(1, observations // 20)} AS observer_id, 'jpg' AS extension,
               {licences}[CAST(1 + hash(p, 7) % 8 AS BIGINT)] AS license, 2048 AS width, 1536 AS height, position
        FROM (SELECT i AS p, i AS o, 0 AS position FROM range({observations}) t(i)
              UNION ALL SELECT {observations} + i, 2 * i, 1 FROM range({observations // 2}) t(i))
        ) TO '{folder / "photos.csv.gz"}' {out}""")
    connection.execute(f"""COPY (
        SELECT i AS observer_id, 'user' || i AS login, CASE WHEN i % 3 = 0 THEN NULL ELSE 'Observer ' || i END AS name
        FROM range({max(1, observations // 20)}) t(i)) TO '{folder / "observers.csv.gz"}' {out}""")
    connection.close()


def phase(kind: str, metadata: Path, index: Path, species: int, genera: int) -> dict:
    from entitynet.config import InaturalistConfig
    from entitynet.search.inaturalist import InaturalistEngine, Wanted
    from entitynet.search.inaturalist_index import prepare

    config = InaturalistConfig(metadata=str(metadata))
    started = time.perf_counter()
    prepared = prepare(config, index, None)
    result: dict = {"prepare_s": round(time.perf_counter() - started, 1)}
    if kind != "index":
        step = max(1, species // 1000)
        wanted = [Wanted(f"S{k}", f"q{k}", f"species {k}", str(1000000 + k * step), None, None) for k in range(800)]
        wanted += [Wanted(f"N{k}", f"q-n{k}", f"named {k}", None, f"Genus{s % genera} species{s}", "Q7432")
                   for k in range(800, 950) for s in [k * step + 1]]
        wanted += [Wanted(f"G{g}", f"q-g{g}", f"genus {g}", None, f"Genus{g}", "Q34740") for g in range(50)]
        joined = time.perf_counter()
        engine = InaturalistEngine(config, prepared, index / "spill")
        matched = engine.match(wanted)
        selection = index / f"selection-{kind}.parquet"
        selection.unlink(missing_ok=True)
        selection.with_suffix(".json").unlink(missing_ok=True)
        engine.select(selection)
        candidates = sum(len(engine.part(selection, start, start + 500)) for start in range(0, len(matched), 500))
        result.update(join_s=round(time.perf_counter() - joined, 1), entities=dict(engine.entities), candidates=candidates,
                      dropped=dict(engine.drops))
    result["total_s"] = round(time.perf_counter() - started, 1)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observations", type=int, default=10_000_000)
    parser.add_argument("--species", type=int, default=100_000)
    parser.add_argument("--genera", type=int, default=10_000)
    parser.add_argument("--work", type=Path, default=None, help="folder to keep the generated set in (default: a temporary one)")
    parser.add_argument("--phase", choices=["index", "join", "rerun"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="inat-bench-"))
    metadata, index = work / "metadata", work / "index"
    if args.phase:
        print(json.dumps(phase(args.phase, metadata, index, args.species, args.genera)))
        return
    if not (metadata / "observers.csv.gz").exists():
        started = time.perf_counter()
        generate(metadata, args.observations, args.species, args.genera)
        sizes = {p.name: round(p.stat().st_size / 2**20) for p in sorted(metadata.glob("*.csv.gz"))}
        print(f"generated {args.observations:,} observations, {args.observations * 3 // 2:,} photos in "
              f"{time.perf_counter() - started:.0f}s: {sizes} MB", flush=True)
    for kind in ("index", "join", "rerun"):
        command = [sys.executable, __file__, "--phase", kind, "--work", str(work),
                   "--species", str(args.species), "--genera", str(args.genera)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        print(kind, output.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
