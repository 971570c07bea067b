"""The build stage: RUN/images + records -> RUN/dataset/, a Hugging Face dataset repository.

1. ``rows.prepare`` decides which stored images are rows, their split and domain;
2. the EntityNet builder (``entitynet.builders.entitynet``) runs in-process once per domain with
   parquet output, ``num_proc`` and ``max_shard_size``, and its shards are laid out as
   ``data/living/{split}-NNNNN-of-MMMMM.parquet`` and ``data/other/...``;
3. the card (README.md with the YAML that declares ``entitynet`` and ``livingthings``) and its
   pictures are written beside them.

The folder is assembled in RUN/.dataset.building and swapped in at the end, so RUN/dataset is
always a complete dataset or absent.
"""

from __future__ import annotations

import csv
import logging
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from entitynet import layout
from entitynet.build.rows import prepare
from entitynet.builders.entitynet import DOMAINS, SPLITS, EntityNet
from entitynet.config import Config, DownloadConfig
from entitynet.rundir import Context, RunDir, StageError, package_versions, shown, swap_in

logger = logging.getLogger(__name__)

_SHARD = re.compile(rf"-({'|'.join(SPLITS)})(?:-(\d+)-of-(\d+))?\.parquet$")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def evaluation_images(source: Path) -> Iterator[tuple[str, bytes | None]]:
    """The images of an evaluation set, one at a time, each with its name (its file relative to
    ``source``, ``FILE.parquet#ROW`` for a parquet row): a folder of image files and/or parquet
    files with an image column (None for a row without bytes)."""
    import pyarrow.parquet as pq

    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in files:
        name = path.name if path == source else path.relative_to(source).as_posix()
        if path.suffix == ".parquet":
            parquet = pq.ParquetFile(path)
            column = next((c for c in ("image", "jpg", "png") if c in parquet.schema_arrow.names), None)
            row = 0
            for batch in parquet.iter_batches(batch_size=256, columns=[column]) if column else ():
                for value in batch.column(0).to_pylist():
                    yield f"{name}#{row}", value.get("bytes") if isinstance(value, dict) else value
                    row += 1
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            yield name, path.read_bytes()


def near_evaluation(images_dir: Path, source: Path, distance: int, download: DownloadConfig
                    ) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Our stored images within ``distance`` bits of an evaluation image (one match per pair:
    evaluation image, url, image_id, distance), and how many evaluation images were checked and
    could not be read. Evaluation images are hashed exactly as downloads are (``dhash_as_stored``:
    EXIF orientation, first frame, RGB, shrink)."""
    from entitynet.download.dedup import NearIndex, image_keys
    from entitynet.download.images import dhash_as_stored, hamming

    index = NearIndex(distance)
    seen: Counter[str] = Counter()
    names: list[str] = []  # by the index's keys
    for name, blob in evaluation_images(source):
        value = dhash_as_stored(blob, download) if blob else None
        if value is None:
            seen["evaluation_images_unreadable"] += 1
        else:
            seen["evaluation_images"] += 1
            index.add(value)
            names.append(name)
    if seen["evaluation_images_unreadable"]:
        logger.warning("build: %d evaluation images in %s could not be read and were not checked",
                       seen["evaluation_images_unreadable"], source)
    matches = [{"evaluation_image": names[key], "url": url, "image_id": image_id,
                "distance": hamming(index.hashes[key], value)}
               for image_id, url, value in image_keys(images_dir) for key in sorted(index.near(value))]
    return matches, seen


def write_matches(matches: list[dict[str, Any]], path: Path) -> None:
    """DECONTAMINATION: which evaluation image matched which downloaded image (and was left out)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["evaluation_image", "url", "image_id", "distance"])
        writer.writeheader()
        writer.writerows(matches)


def build(config: Config, run_dir: RunDir, cache: Path, upstream: tuple[str, ...]) -> dict[str, Any]:
    """The dataset from the run's stored images; ``upstream`` are the stages before this one, whose
    records the card reads."""
    from entitynet.hub_cards.dataset_card import write_card

    settings = config.build
    rows_dir = cache / "rows"
    shutil.rmtree(rows_dir, ignore_errors=True)
    matches: list[dict[str, Any]] = []
    evaluation: Counter[str] = Counter()
    if settings.exclude_near:
        matches, evaluation = near_evaluation(run_dir.path(layout.IMAGES), Path(settings.exclude_near),
                                              settings.exclude_distance, config.download)
    excluded = {match["url"] for match in matches}
    counts = prepare(run_dir.root, rows_dir, settings.validation_fraction, settings.test_fraction, settings.seed, excluded,
                     settings.seen_test_fraction)
    if not counts.get("rows") and (run_dir.recorded_config("import").get("import") or {}).get("kind") == "url-list":
        raise StageError(f"build: {run_dir.root} was imported from a URL list, and a URL list names no entities, which "
                         f"every row of the dataset needs; its {counts.get('stored_images', 0)} images are in "
                         f"{run_dir.path(layout.IMAGES)}/shard-*.parquet (image, url, sources with the caption as text)")
    if not counts.get("rows"):
        left_out = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()) if k != "stored_images") or "no stored images"
        raise StageError(f"build: none of the {counts.get('stored_images', 0)} stored images can be a row ({left_out}); "
                         "nothing to build: see the download stage's failures")

    staging = run_dir.path(layout.DATASET_STAGING)
    shutil.rmtree(staging, ignore_errors=True)
    for domain in DOMAINS:
        if not any(counts.get(f"rows_{domain}_{split}") for split in SPLITS):
            continue
        output = cache / "prepared" / domain
        shutil.rmtree(output, ignore_errors=True)
        builder = EntityNet(config_name="entitynet", domains=(domain,), rows=str(rows_dir), cache_dir=str(cache / "hf"))
        builder.download_and_prepare(
            output_dir=str(output), file_format="parquet", max_shard_size=settings.max_shard_size,
            num_proc=settings.num_proc if settings.num_proc > 1 else None,
        )
        _lay_out(output, staging / "data" / domain)
    if settings.exclude_near:  # published with the dataset: what decontamination removed, and why
        write_matches(matches, staging / layout.DECONTAMINATION)
    pretty = settings.pretty_name or ("LivingThings" if config.domain == "livingthings" else "EntityNet")
    card = write_card(staging, _context(config, run_dir, counts, evaluation, upstream), pretty_name=pretty,
                      repo_id=settings.repo_id, sample_count=settings.sample_images)
    swap_in(staging, run_dir.path(layout.DATASET))
    return {**counts, **evaluation, "card": card, "dataset": layout.DATASET}  # relative: the run may move


def _lay_out(prepared: Path, target: Path) -> None:
    """The builder's ``<name>-<split>[-i-of-n].parquet`` files as ``<split>-iiiii-of-nnnnn.parquet``."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(prepared.glob("*.parquet")):
        match = _SHARD.search(path.name)
        if not match:
            continue
        split, index, total = match.group(1), int(match.group(2) or 0), int(match.group(3) or 1)
        shutil.move(str(path), target / f"{split}-{index:05d}-of-{total:05d}.parquet")


def provenance(made: dict[str, dict[str, Any]], stats: dict[str, dict[str, Any]],
               imported: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """One line per stage of what ran: from the settings it recorded (RUN/config/<stage>.yaml) and
    its statistics; what a stage did not record (a run made by hand) says so. A run made by
    ``entitynet import`` (``imported``: its statistics) says what it imported in place of kg..search."""

    def unknown(stage: str) -> str:
        return f"settings not recorded (RUN/config/{stage}.yaml)"

    kg, enrich, queries, search, download = (made[stage] for stage in ("kg", "enrich", "queries", "search", "download"))
    lines = []
    if imported is not None:
        revision = f" at {imported['revision']}" if imported.get("revision") else ""
        splits = ", ".join(f"{name} {count}" for name, count in imported.get("rows_per_split", {}).items())
        what = "entities, natural types, queries, alt texts and splits as released" if imported.get("kind") == "release" else "URLs and captions"
        lines.append(("imported", f"{imported.get('rows', 0)} rows of {imported.get('source')}{revision}"
                                  f"{f' ({splits})' if splits else ''}: {what}"))
    elif kg:
        sparql, wikidata = kg.get("sparql", {}), kg.get("wikidata", {})
        source = f"dump {Path(sparql['dump']).name}" if sparql.get("dump") else sparql.get("endpoint")
        lines.append(("knowledge graph", f"{', '.join(kg.get('sources', []))}; Wikidata from {source} "
                                         f"({wikidata.get('mode')} under {', '.join(wikidata.get('roots', []))})"))
    else:
        lines.append(("knowledge graph", f"{stats['kg'].get('entities', 'unknown number of')} entities; {unknown('kg')}"))
    if imported is None:
        lines += _harvest_provenance(enrich, queries, search, stats, unknown)
    counted = (f"{stats['download']['stored']} stored of {stats['download'].get('urls', stats['download']['stored'])} URLs"
               if "stored" in stats["download"] else "counts not recorded")
    settings = (f"max side {download['max_side']}px {str(download['format']).upper()} q{download['quality']}" if download
                else unknown("download"))
    lines.append(("download", f"{settings}; {counted}" if download else f"{counted}; {settings}"))
    return lines


def _harvest_provenance(enrich: dict[str, Any], queries: dict[str, Any], search: dict[str, Any],
                        stats: dict[str, dict[str, Any]], unknown: Any) -> list[tuple[str, str]]:
    lines = []
    if enrich:
        attributes = enrich.get("attributes", {})
        lines.append(("natural types", f"{enrich.get('natural_type', {}).get('chooser')} chooser"))
        lines.append(("visual attributes", f"{attributes.get('backend')} backend, top {attributes.get('top_k_per_root')} entities per root"))
    else:
        lines += [("natural types", unknown("enrich")), ("visual attributes", unknown("enrich"))]
    lines.append(("queries", ", ".join(queries.get("kinds", [])) if queries else unknown("queries")))
    engine = search.get("engine") or stats["search"].get("engine")
    if search and engine == "inaturalist":  # no search: a join by taxon, capped per entity
        inat = search.get("inaturalist", {})
        lines.append(("image search", f"iNaturalist open data, joined by taxon; at most {inat.get('per_entity')} photos per "
                                      f"entity; licences {', '.join(inat.get('licenses', []))}; "
                                      f"quality grades {', '.join(inat.get('quality_grades', []))}"))
        return lines
    lines.append(("image search", f"{engine}, {search['per_query']} per query" if search else
                  f"{engine}; {unknown('search')}" if engine else unknown("search")))
    return lines


def _context(config: Config, run_dir: RunDir, counts: dict[str, Any], evaluation: Counter[str],
             upstream: tuple[str, ...]) -> dict[str, Any]:
    """What the card says about how the data was made, read from the stages' records."""
    states = {stage: (run_dir.state(stage) or {}) for stage in upstream}
    # What the stages actually ran with (RUN/config/<stage>.yaml), not what this command says.
    made = {stage: run_dir.recorded_config(stage).get(stage) or {} for stage in upstream}
    download = states["download"].get("stats", {})
    download_config = made["download"]
    enrich = made["enrich"]
    imported = run_dir.state("import")  # a run made by `entitynet import` instead of kg..search
    harvested_with = (imported or states["kg"]).get("versions") or {}
    built_with = package_versions()
    synthetic = run_dir.path(layout.DEMO_MARKER).exists()  # written by `entitynet demo`, whose images are drawn
    return {
        "summary": f"{counts.get('rows', 0)} images of {'living things' if config.domain == 'livingthings' else 'entities of all domains'}, "
                   "each with the alt texts, search queries and knowledge-graph entities that found it.",
        "synthetic": synthetic,
        "provenance": provenance(made, {stage: state.get("stats", {}) for stage, state in states.items()},
                                 imported["stats"] if imported else None),
        "homepage": config.build.homepage,
        "versions": built_with,  # of this build; the harvest's follow when they differ
        "harvest_versions": {k: v for k, v in harvested_with.items() if built_with.get(k) != v},
        "failures": sorted(download.get("reasons", {}).items(), key=lambda kv: -kv[1]),
        "duplicates": counts.get("merged_duplicates", 0),
        "straddling": counts.get("straddles_splits", 0),
        "excluded": counts.get("excluded_near_evaluation_images", 0),
        "exclude_distance": config.build.exclude_distance,
        "max_side": download_config.get("max_side", config.download.max_side),
        "enrich_method": "as the imported release has them" if imported else
                         f"natural types: {enrich.get('natural_type', {}).get('chooser', 'kg')}; "
                         f"attributes: {enrich.get('attributes', {}).get('backend', 'kg')}",
        "evaluation_images": evaluation["evaluation_images"],
        "evaluation_unreadable": evaluation["evaluation_images_unreadable"],
    }


def settings(config: Config, context: Context) -> dict[str, Any]:
    return {"build": config.build}


def make(config: Config, context: Context) -> dict[str, Any]:
    return build(config, context.run_dir, context.cache, context.earlier)


def summary(stats: dict[str, Any]) -> str:
    card = stats.get("card", {})
    per = card.get("rows_per_config", {})
    lines = [f"{card.get('rows', 0)} rows for {card.get('entities', 0)} entities"]
    for name, counts in per.items():
        lines.append(f"  {name}: " + ", ".join(f"{split} {counts.get(split, 0)}" for split in SPLITS))
    left_out = {k: stats[k] for k in ("merged_duplicates", "excluded_near_evaluation_images", "without_entity",
                                      "straddles_splits") if stats.get(k)}
    if left_out:
        lines.append("  not rows: " + ", ".join(f"{k}: {v}" for k, v in left_out.items()))
    if stats.get("evaluation_images_unreadable"):
        lines.append(f"  evaluation images that could not be read (not checked): {stats['evaluation_images_unreadable']}")
    if stats.get("dataset") and per:
        lines.append(f'open it: load_dataset("{shown(stats["dataset"])}", "{"livingthings" if "livingthings" in per else next(iter(per))}")')
    return "\n".join(lines)
