"""The inaturalist engine: iNaturalist's open-data files (made here, in the published format)
joined to the sample graph's entities by P3151 and by P225 + P105; photos served from 127.0.0.1;
kg -> search -> download -> build -> load_dataset; the draw; bad input; resume and index reuse."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import datasets
import duckdb
import pytest
from helpers import kill_when
from inaturalist_data import KEPT, OBSERVERS, PHOTOS, TAXA, PhotoHost, write_metadata

from entitynet.cli import main
from entitynet.config import InaturalistConfig, load_config
from entitynet.search.base import EngineError
from entitynet.search.inaturalist import InaturalistEngine, Wanted
from entitynet.search.inaturalist_index import prepare
from entitynet.tables import read_rows
from entitynet.typed_config import ConfigError

LOOPBACK_ONLY = ["--set", "download.allowed_networks=[127.0.0.1/32]", "--set", "download.min_side=16",
                 "--set", "download.read_timeout=2.0", "--set", "download.max_attempts=1"]


@pytest.fixture(scope="module")
def host():
    server = PhotoHost()
    yield server
    server.close()


def search_args(run: Path, metadata: str, host: PhotoHost, *extra: str) -> list[str]:
    return ["-q", "search", "--run", str(run), "--config", "demo", "--engine", "inaturalist",
            "--set", f"search.inaturalist.metadata={metadata}", "--set", f"search.inaturalist.photo_url={host.photo_url}",
            *extra]


def candidates(run: Path) -> list[dict]:
    return [row for part in sorted((run / "candidates").glob("part-*.parquet")) for row in read_rows(part)]


def photo_id(url: str) -> int:
    return int(url.split("/photos/")[1].split("/")[0])


def by_entity(run: Path, rows: list[dict]) -> dict[str, set[int]]:
    """Photo ids per entity, through the query each candidate was filed under."""
    entity_of = {row["query_id"]: [use["entity_id"] for use in row["uses"]] for row in read_rows(run / "queries.parquet")}
    found: dict[str, set[int]] = {}
    for row in rows:
        for entity in entity_of[row["query_id"]]:
            found.setdefault(entity, set()).add(photo_id(row["url"]))
    return found


def _entities_per_photo(run: Path, rows: list[dict]) -> dict[int, set[str]]:
    per: dict[int, set[str]] = {}
    for entity, photos in by_entity(run, rows).items():
        for photo in photos:
            per.setdefault(photo, set()).add(entity)
    return per


def test_the_kg_stage_harvests_the_inaturalist_id_and_the_taxon_rank(queried_run):
    entities = {row["id"]: row for row in read_rows(queried_run / "entities.parquet")}
    assert (entities["Q140"]["inaturalist_id"], entities["Q140"]["taxon_rank"]) == ("41964", "Q7432")  # lion
    assert (entities["Q127960"]["taxon_name"], entities["Q127960"]["taxon_rank"]) == ("Panthera", "Q34740")
    assert entities["Q127960"]["inaturalist_id"] is None  # a genus joined by name and rank


def test_kg_to_dataset_with_licensed_attributed_photos(queried_run, host, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(queried_run, run)
    metadata = write_metadata(tmp_path / "metadata")
    assert main(search_args(run, str(metadata), host)) == 0

    stats = json.loads((run / "stages" / "search.json").read_text())["stats"]
    assert stats["engine"] == "inaturalist"
    assert stats["entities"]["matched_by_id"] == 4  # lion, tiger, house cat, dog
    assert stats["entities"]["matched_by_name"] >= 5  # leopard, wolf, Panthera, Felidae, Canis, ...
    assert stats["entities"]["several_taxa_by_name"] == 1  # Pyrus: two active genera
    assert stats["dropped"]["license"] > 0 and stats["dropped"]["quality_grade"] > 0

    rows = candidates(run)
    found = by_entity(run, rows)
    for entity, photos in KEPT.items():
        assert found[entity] == photos
    assert all(len(entities) == 1 for entities in _entities_per_photo(run, rows).values())  # the most specific entity only
    assert {row["license"] for row in rows} <= {"CC0", "CC-BY", "CC-BY-SA"}
    lion = {photo_id(row["url"]): row for row in rows if row["text"] == "lion"}
    assert lion[101]["attribution"] == "Ana Lima via iNaturalist"
    assert lion[103]["attribution"] == "bo via iNaturalist"  # no name: the login
    assert lion[101]["license_url"] == "https://creativecommons.org/licenses/by/4.0/"
    assert lion[101]["page_url"] == "https://www.inaturalist.org/observations/0b1e-lion-1"
    assert lion[101]["url"] == f"{host.base}/photos/101/medium.jpg"
    assert (lion[101]["width"], lion[101]["height"]) == (500, 375)  # 2048 x 1536 at medium
    assert (lion[101]["taxon_id"], lion[101]["taxon_name"], lion[101]["observed_on"]) == ("41964", "Panthera leo", "2021-05-01")
    assert lion[103]["url"].endswith("/photos/103/medium.jpeg")

    assert main(["-q", "download", "--run", str(run), "--config", "demo", *LOOPBACK_ONLY]) == 0
    assert main(["-q", "build", "--run", str(run), "--config", "demo"]) == 0
    loaded = datasets.load_dataset(str(run / "dataset"), "livingthings", cache_dir=str(tmp_path / "hf-cache"))
    rows_out = {photo_id(row["urls"][0]): row for split in loaded for row in loaded[split]}
    assert set(rows_out) == {photo_id(row["url"]) for row in rows}
    assert rows_out[101]["license"] == "CC-BY" and rows_out[101]["attribution"] == "Ana Lima via iNaturalist"
    assert rows_out[111]["license"] == "CC0" and rows_out[111]["engines"] == ["inaturalist"]
    assert "https://www.inaturalist.org/observations/0b1e-lion-1" in rows_out[101]["page_urls"]
    card = (run / "dataset" / "README.md").read_text()
    assert "CC-BY" in card and "CC0" in card
    assert "iNaturalist open data, joined by taxon; at most 100 photos per entity; licences CC0, CC-BY, CC-BY-SA" in card


def test_a_rerun_reuses_parts_and_the_index_and_a_kill_9_resumes(queried_run, host, tmp_path):
    metadata = str(write_metadata(tmp_path / "metadata"))
    whole = tmp_path / "whole"
    shutil.copytree(queried_run, whole)
    assert main(search_args(whole, metadata, host, "--set", "search.queries_per_part=2")) == 0
    expected = candidates(whole)
    index = whole / "cache" / "search" / "inaturalist" / "index"
    built = {path.name: path.stat().st_mtime_ns for path in index.glob("*.parquet")}
    assert set(built) == {"taxa.parquet", "observations.parquet", "photos.parquet", "observers.parquet", "taxon_counts.parquet"}

    (whole / "stages" / "search.json").unlink()  # as if killed before the end
    (whole / "candidates" / "part-00001.parquet").unlink()
    assert main(search_args(whole, metadata, host, "--set", "search.queries_per_part=2")) == 0
    assert candidates(whole) == expected
    assert json.loads((whole / "stages" / "search.json").read_text())["stats"]["parts_reused"] >= 1
    assert {path.name: path.stat().st_mtime_ns for path in index.glob("*.parquet")} == built  # not indexed again

    shared = tmp_path / "shared"  # another run pointed at the first one's index: nothing is indexed again
    shutil.copytree(queried_run, shared)
    assert main(search_args(shared, metadata, host, "--set", "search.queries_per_part=2",
                            "--set", f"search.inaturalist.index={index}")) == 0
    assert candidates(shared) == expected and not (shared / "cache" / "search" / "inaturalist" / "index").exists()
    assert {path.name: path.stat().st_mtime_ns for path in index.glob("*.parquet")} == built

    killed = tmp_path / "killed"
    shutil.copytree(queried_run, killed)
    command = [sys.executable, "-m", "entitynet", *search_args(killed, metadata, host, "--set", "search.queries_per_part=1")]
    kill_when(command, killed / "candidates" / "part-00001.parquet", seconds=120)
    assert not (killed / "stages" / "search.json").exists()  # killed midway, not after the end
    assert main(search_args(killed, metadata, host, "--set", "search.queries_per_part=2")) == 0
    assert candidates(killed) == expected


def test_metadata_from_a_url_prefix_is_fetched_once(queried_run, tmp_path):
    metadata = write_metadata(tmp_path / "metadata")
    server = PhotoHost(metadata)
    try:
        run = tmp_path / "run"
        shutil.copytree(queried_run, run)
        assert main(search_args(run, f"{server.base}/metadata", server)) == 0
        assert by_entity(run, candidates(run))["Q140"] == KEPT["Q140"]
        fetched = sorted(path for path in server.requests if path.startswith("/metadata/"))
        assert fetched == sorted(f"/metadata/{name}.csv.gz" for name in ("taxa", "observations", "photos", "observers"))
    finally:
        server.close()


def engine_for(tmp_path: Path, **settings) -> InaturalistEngine:
    config = InaturalistConfig(metadata=str(write_metadata(tmp_path / "metadata")), **settings)
    return InaturalistEngine(config, prepare(config, tmp_path / "index", None), tmp_path / "spill")


def drawn(engine: InaturalistEngine, folder: Path) -> list:
    """The engine's candidates for every entity it matched (a fresh selection in ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    selection = folder / f"selection-{len(list(folder.iterdir()))}.parquet"
    engine.select(selection)
    return engine.part(selection, 0, len(engine.matched))


def wanted(entity: str, inat: str | None = None, name: str | None = None, rank: str | None = None) -> Wanted:
    return Wanted(entity, f"q-{entity}", entity.lower(), inat, name, rank)


def test_the_draw_caps_each_entity_balances_children_and_prefers_distinct_observers_and_first_photos(tmp_path):
    engine = engine_for(tmp_path, per_entity=2, licenses=["CC0", "CC-BY", "CC-BY-NC"])
    engine.match([wanted("PANTHERA", name="Panthera", rank="Q34740"), wanted("LION", inat="41964")])
    draws = []
    for seed in range(4):
        engine.config.seed = seed
        found = drawn(engine, tmp_path / "drawn")
        per = {key: [c for c in found if c.query_id == f"q-{key}"] for key in ("PANTHERA", "LION")}
        assert len({c.taxon_id for c in per["PANTHERA"]}) == 2  # two species, not two of one
        assert "41964" not in {c.taxon_id for c in per["PANTHERA"]}  # lions go to the lion entity
        # lion: photo 102 is the second photo of observer 1's observation; 101 and 103 come first
        assert {photo_id(c.url) for c in per["LION"]} == {101, 103}
        assert [c.rank for c in found] == [0, 1, 0, 1]
        draws.append([c.url for c in found])
    again = engine_for(tmp_path / "again", per_entity=2, seed=3, licenses=["CC0", "CC-BY", "CC-BY-NC"])
    again.match([wanted("PANTHERA", name="Panthera", rank="Q34740"), wanted("LION", inat="41964")])
    assert [c.url for c in drawn(again, tmp_path / "again-drawn")] == draws[3]  # the seed decides

    alone = engine_for(tmp_path / "alone", descendants=False)
    alone.match([wanted("PANTHERA", name="Panthera", rank="Q34740")])
    assert drawn(alone, tmp_path / "alone-drawn") == []  # no genus-level observations


def test_entities_are_joined_by_id_then_by_name_and_rank_and_never_guessed(tmp_path):
    engine = engine_for(tmp_path)
    matched = engine.match([
        wanted("A", inat="41964"),  # by id
        wanted("B", inat="123456789", name="Panthera tigris", rank="Q7432"),  # an unknown id: by name
        wanted("C", name="Canis lupus", rank="Q7432"),  # one active taxon (its inactive twin does not count)
        wanted("D", name="Pyrus", rank="Q34740"),  # two active genera
        wanted("E", name="Canis lupus", rank="Q34740"),  # the name, but not as a genus
        wanted("F", name="Panthera leo"),  # no rank
        wanted("G"),  # neither id nor name
        wanted("H", name="Angiospermae", rank="Q713623"),  # a clade: not an iNaturalist rank
    ])
    assert [(m.wanted.entity_id, m.taxon_id, m.by) for m in matched] == [("A", 41964, "id"), ("B", 41967, "name"), ("C", 42048, "name")]
    assert dict(engine.entities) == {"matched_by_id": 1, "matched_by_name": 2, "several_taxa_by_name": 1, "no_taxon_by_name": 1,
                                     "no_taxon_rank": 1, "no_taxon_id_or_name": 1, "taxon_rank_not_in_inaturalist": 1}
    with pytest.raises(EngineError, match="no entity has an iNaturalist taxon ID"):
        engine_for(tmp_path / "none").match([wanted("G"), wanted("G2")])


def test_unquoted_text_with_quotes_is_read_row_by_row(tmp_path):
    engine = engine_for(tmp_path)
    names = duckdb.sql(f"SELECT name FROM read_parquet('{engine.index.table('taxa')}')").fetchall()
    assert len(names) == len(TAXA) and ('Panthera leo "persica" d\'Asie',) in names
    observers = duckdb.sql(f"SELECT observer_id, login, name FROM read_parquet('{engine.index.table('observers')}') ORDER BY 1").fetchall()
    assert observers == [(i, login, name or None) for i, login, name in OBSERVERS]


def _truncate(folder: Path) -> None:
    data = (folder / "photos.csv.gz").read_bytes()
    (folder / "photos.csv.gz").write_bytes(data[: len(data) // 2])


def _drop_observers(folder: Path) -> None:
    (folder / "observers.csv.gz").unlink()


def _old_header(folder: Path) -> None:
    write_metadata(folder, observation_header=["observation_uuid", "observer_id", "latitude", "longitude",
                                               "positional_accuracy", "taxon_id", "grade", "observed_on", "anomaly_score"])


def _new_licence(folder: Path) -> None:
    write_metadata(folder, photos={**PHOTOS, 199: ("0b1e-lion-1", "CC-BY-4.0-IGO", 2, "jpg")})


def _not_gzip(folder: Path) -> None:
    (folder / "taxa.csv.gz").write_text("taxon_id\tancestry\n")


@pytest.mark.parametrize("spoil, message", [
    (_drop_observers, "missing metadata file: .*observers.csv.gz"),
    (_truncate, "photos.csv.gz: cannot be read to the end .*truncated"),
    (_old_header, "observations.csv.gz: not the expected observations header: lacks quality_grade"),
    (_new_licence, "licence values never seen before: 'CC-BY-4.0-IGO' \\(1 photos\\)"),
    (_not_gzip, "taxa.csv.gz: cannot read a gzip-compressed header line"),
])
def test_bad_metadata_stops_with_one_clear_error_and_writes_no_candidates(queried_run, host, tmp_path, capsys, spoil, message):
    metadata = write_metadata(tmp_path / "metadata")
    spoil(metadata)
    run = tmp_path / "run"
    shutil.copytree(queried_run, run)
    assert main(search_args(run, str(metadata), host)) == 1
    error = capsys.readouterr().err
    assert "entitynet search: error: inaturalist: " in error
    assert re.search(message, error), error
    assert not list((run / "candidates").glob("part-*.parquet"))


def test_the_configuration_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="licenses"):
        load_config("demo", assignments=["search.engine=inaturalist", f"search.inaturalist.metadata={tmp_path}",
                                         "search.inaturalist.licenses=[CC-BY, CC-BY-4.0]"])
    with pytest.raises(ConfigError, match="inaturalist.metadata"):
        load_config("demo", assignments=["search.engine=inaturalist"])
    with pytest.raises(ConfigError, match="photo_url"):
        load_config("demo", assignments=[f"search.inaturalist.metadata={tmp_path}", "search.inaturalist.photo_url=http://x/{photo_id}.jpg"])
    url = load_config("demo", assignments=["search.inaturalist.metadata=https://example.org/metadata"])
    assert url.search.inaturalist.metadata == "https://example.org/metadata"  # a URL is not made a path


def test_the_inaturalist_preset_is_accepted_by_every_stage_offline(tmp_path):
    """It cannot run here (QLever, the bucket): it loads, every stage's check passes, and it asks
    for what the preset promises (iNaturalist, about 200 species x 20 photos, a tiny model)."""
    from entitynet import pipeline
    from entitynet.rundir import RunDir

    config = load_config("livingthings-inat")
    pipeline.preflight(config, RunDir(tmp_path / "run"), pipeline.STAGES)
    inat = config.search.inaturalist
    assert config.search.engine == "inaturalist" and inat.metadata == "https://inaturalist-open-data.s3.amazonaws.com"
    assert inat.licenses == ["CC0", "CC-BY", "CC-BY-SA"] and inat.per_entity == 20 and inat.size == "medium"
    assert 150 <= config.kg.limit_per_root * len(config.kg.wikidata.roots) <= 300 and config.train.preset == "tiny"


def test_an_index_killed_midway_is_completed_from_the_file_it_was_on(tmp_path):
    config = InaturalistConfig(metadata=str(write_metadata(tmp_path / "metadata")))
    index = tmp_path / "index"
    prepare(config, index, None)
    kept = (index / "taxa.parquet").stat().st_mtime_ns
    (index / "photos.parquet").unlink()  # killed while converting the photos: only a partial file there
    (index / ".photos.parquet.tmp").write_bytes(b"PAR1 half a parquet file")
    again = prepare(config, index, None)
    assert (index / "taxa.parquet").stat().st_mtime_ns == kept and not (index / ".photos.parquet.tmp").exists()
    assert sum(again.licenses.values()) == len(PHOTOS)
    write_metadata(tmp_path / "metadata", photos={**PHOTOS, 199: ("0b1e-lion-1", "CC0", 2, "jpg")})  # next month's files
    assert sum(prepare(config, index, None).licenses.values()) == len(PHOTOS) + 1


def test_a_taxon_with_many_observations_is_sampled_before_the_join_and_counts_stay_whole(tmp_path, monkeypatch):
    from entitynet.search import inaturalist

    monkeypatch.setattr(inaturalist, "OVERSAMPLE", 1)  # examine about one observation per child taxon
    engine = engine_for(tmp_path, per_entity=1)
    engine.match([wanted("FELIDAE", name="Felidae", rank="Q35409")])
    found = drawn(engine, tmp_path / "drawn")
    assert len(found) == 1  # Puma's single observation is always examined, so there is one to keep
    assert engine.drops["quality_grade"] == 2  # the lion's needs_id and casual observations, counted before sampling
    # licence drops are of the examined photos: fewer than the 4 (102, 107-109) of all Felidae's research photos
    assert engine.drops["license"] < 4
