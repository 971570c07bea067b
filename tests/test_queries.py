"""The queries stage: kinds, normalisation, deduplication, disambiguation, stable ids."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from entitynet.cli import main
from entitynet.queries import normalise, query_id, uses_of
from entitynet.records import Attribute, Entity
from entitynet.rundir import RunDir
from entitynet.tables import entity_writer, query_from_row, read_rows


def test_kinds_for_a_living_entity():
    lion = Entity(id="Q140", source="wikidata", name="lion", domain="living", root="Q729",
                  aliases=["African lion"], common_names=["Lion"], taxon_name="Panthera leo",
                  lemmas=["lion", "king of beasts", "Panthera leo"])
    spotted = Attribute("Q140", "pattern", "spotted", "spotted African lion", "kg")
    uses = list(uses_of(lion, "big cat", [spotted], {"noun", "attr", "attrnoun", "wordnet-noun"}))
    assert ("noun", "Panthera leo", None) in uses and ("noun", "African lion", None) in uses
    assert ("wordnet-noun", "king of beasts", None) in uses
    assert ("attrnoun", "spotted African lion", "spotted") in uses
    assert ("attr", "spotted big cat", "spotted") in uses  # "{attribute} {natural type}", the authors' form
    assert list(uses_of(lion, "big cat", [spotted], {"noun"})) == [(k, t, a) for k, t, a in uses if k == "noun"]


def test_other_entities_query_their_name_only():
    chair = Entity(id="Q15026", source="wikidata", name="chair", domain="other", root="Q14745", aliases=["seat"])
    assert list(uses_of(chair, "furniture", [], {"noun"})) == [("noun", "chair", None)]


def test_normalisation_and_stable_ids():
    assert normalise("  Przewalski’s\u00a0Horse ") == "przewalski’s horse"
    assert normalise("ｆｕｌｌ width") == "full width"  # NFKC
    assert query_id("lion", "big cat") == query_id("lion", "big cat") != query_id("lion", "car")


def _write_run(tmp_path, entities, types, attributes):
    """A run directory made by hand, with finished kg and enrich stages."""
    run = RunDir(tmp_path / "run")
    with entity_writer(run.path("entities.parquet")) as writer:
        writer.write_all(entities)
    from entitynet.records import NaturalType
    from entitynet.tables import (
        ATTRIBUTE_SCHEMA,
        NATURAL_TYPE_SCHEMA,
        RecordWriter,
        attribute_to_row,
        natural_type_to_row,
    )

    with RecordWriter(run.path("natural_types.parquet"), NATURAL_TYPE_SCHEMA, natural_type_to_row) as writer:
        writer.write_all(NaturalType(e, t, "test", "kg") for e, t in types.items())
    with RecordWriter(run.path("attributes.parquet"), ATTRIBUTE_SCHEMA, attribute_to_row) as writer:
        writer.write_all(attributes)
    for stage in ("kg", "enrich"):
        run.run_stage(stage, {"made": "by hand"}, [], lambda: {})
    return run


def test_same_text_same_type_merges_uses_different_type_stays_apart(tmp_path):
    cat = Entity(id="Q35694", source="wikidata", name="Jaguar", domain="living", root="Q729")
    cat_wn = Entity(id="wn:jaguar.n.01", source="wordnet", name="jaguar", domain="living", root="wn:x", lemmas=["jaguar"])
    car = Entity(id="Q30055", source="wikidata", name="jaguar", domain="other", root="Q42889")
    long = Entity(id="Q9", source="wikidata", name=" ".join(["word"] * 20), domain="other", root="Q42889")
    run = _write_run(tmp_path, [cat, cat_wn, car, long], {"Q35694": "big cat", "wn:jaguar.n.01": "big cat", "Q30055": "car", "Q9": "car"}, [])
    assert main(["-q", "queries", "--run", str(run.root), "--config", "demo"]) == 0
    queries = [query_from_row(row) for row in read_rows(run.path("queries.parquet"))]
    jaguars = {q.natural_type: q for q in queries if q.text == "jaguar"}
    assert set(jaguars) == {"big cat", "car"}
    assert {(u.kind, u.entity_id) for u in jaguars["big cat"].uses} == {
        ("noun", "Q35694"), ("noun", "wn:jaguar.n.01"), ("wordnet-noun", "wn:jaguar.n.01"),
    }
    assert jaguars["big cat"].query_id == query_id("jaguar", "big cat")
    stats = json.loads(run.marker("queries").read_text())["stats"]
    assert stats["dropped"] == {"too_long": 1}
    assert stats["queries"] == len(queries) == 2


def test_every_entity_has_a_noun_query_and_attributes_become_queries(queried_run):
    queries = [query_from_row(row) for row in read_rows(queried_run / "queries.parquet")]
    entities = {row["id"] for row in read_rows(queried_run / "entities.parquet")}
    with_noun = {u.entity_id for q in queries for u in q.uses if u.kind == "noun"}
    assert with_noun == entities
    attributes = list(read_rows(queried_run / "attributes.parquet"))
    attrnoun = {(u.entity_id, u.attribute) for q in queries for u in q.uses if u.kind == "attrnoun"}
    assert attrnoun == {(a["entity_id"], a["attribute"]) for a in attributes}
    assert all(q.text == normalise(q.text) for q in queries)
    assert len({(q.text, q.natural_type) for q in queries}) == len(queries)
    texts = [q.text for q in queries]
    assert texts == sorted(texts)


def test_rerun_from_scratch_gives_identical_queries(queried_run, tmp_path):
    first = pq.read_table(queried_run / "queries.parquet")
    assert main(["-q", "queries", "--run", str(queried_run), "--config", "demo", "--force"]) == 0
    assert pq.read_table(queried_run / "queries.parquet").equals(first)


def test_attr_queries_are_made_per_natural_type_and_counted_over_its_entities(tmp_path):
    # the authors' kgraph/living_generate_attribute_queries.py: one query "{attribute} {type name}"
    # per (attribute, natural type), counted over all entities of the type; the old stage rewrote
    # each entity's own attribute query, so "jaguar, spotted" and a query without the name gave
    # other texts or none, and "spotted big cat" served one entity of the three
    leopard = Entity(id="Q34706", source="wikidata", name="leopard", domain="living", root="Q729")
    jaguar = Entity(id="Q35694", source="wikidata", name="jaguar", domain="living", root="Q729")
    cheetah = Entity(id="Q35255", source="wikidata", name="cheetah", domain="living", root="Q729")
    tabby = Entity(id="Q1", source="wikidata", name="tabby", domain="living", root="Q729")
    attributes = [Attribute("Q34706", "pattern", "spotted", "spotted leopard", "llm:m"),  # entity by entity
                  Attribute("Q34706", "behavior", "in flight", "leopard in flight", "kg"),
                  Attribute("Q35694", "pattern", "Spotted", "jaguar, spotted", "llm:m"),
                  Attribute("Q35694", "behavior", "running", "running jaguar", "llm:m"),
                  Attribute("Q35255", "pattern", "spotted", "spotted coat of the fastest cat", "llm:m"),
                  Attribute("Q35255", "behavior", "running", "cheetah running", "llm:m"),
                  Attribute("Q1", "pattern", "spotted", "spotted tabby", "llm:m")]
    types = {"Q34706": "big cat", "Q35694": "big cat", "Q35255": "big cat", "Q1": "house cat"}
    run = _write_run(tmp_path, [leopard, jaguar, cheetah, tabby], types, attributes)
    assert main(["-q", "queries", "--run", str(run.root), "--config", "demo"]) == 0
    queries = [query_from_row(row) for row in read_rows(run.path("queries.parquet"))]
    attr = {q.text: q for q in queries if any(u.kind == "attr" for u in q.uses)}
    # "cheetah running" and "running jaguar" word it two ways: one query, in the authors' form on a
    # tie; "leopard in flight" keeps its order ("in flight big cat" would not read as a caption)
    assert set(attr) == {"spotted big cat", "running big cat", "big cat in flight", "spotted house cat"}
    assert {u.entity_id for u in attr["running big cat"].uses} == {"Q35255", "Q35694"}
    spotted = attr["spotted big cat"]
    assert spotted.natural_type == "big cat" and spotted.query_id == query_id("spotted big cat", "big cat")
    assert {(u.kind, u.entity_id, u.attribute) for u in spotted.uses} == {
        ("attr", "Q34706", "spotted"), ("attr", "Q35694", "spotted"), ("attr", "Q35255", "spotted")}
    assert {u.entity_id for u in attr["spotted house cat"].uses} == {"Q1"}
    stats = json.loads(run.marker("queries").read_text())["stats"]
    assert stats["attr_queries_most_entities"][0] == {"text": "spotted big cat", "natural_type": "big cat", "entities": 3}
