"""The enrich stage: natural types by the kg rule, kg attributes, and the stage on the sample."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from entitynet.cli import main
from entitynet.config import NaturalTypeConfig
from entitynet.enrich.attributes import AttributeStats, kg_attributes, load_vocabulary
from entitynet.enrich.natural_types import candidates, choose
from entitynet.records import Ancestor, Entity, VisualFact
from entitynet.tables import read_entities, read_rows
from entitynet.typed_config import ConfigError

CONFIG = NaturalTypeConfig()


def entity(ancestors: list[Ancestor], name: str = "thing", root: str = "Q729", **fields) -> Entity:
    return Entity(id=fields.pop("id", "Q1"), source="wikidata", name=name, domain=fields.pop("domain", "living"),
                  root=root, ancestors=ancestors, **fields)


def test_wordnet_hypernyms_beat_latin_taxa_and_nearer_beats_popular():
    lion = entity(
        [Ancestor("Q127960", "Panthera", 109, 1), Ancestor("Q16521", "taxon", 900, 1), Ancestor("Q25265", "Felidae", 141, 2),
         Ancestor("Q7377", "mammal", 230, 3), Ancestor("wn:big_cat.n.01", "big cat", None, 1),
         Ancestor("wn:feline.n.01", "feline", None, 2)],
        name="lion",
    )
    choice = choose(lion, CONFIG)
    assert (choice.natural_type, choice.reason) == ("big cat", "popular_common_noun")
    assert "taxon" not in [c.label for c in choice.candidates]  # over-generic
    assert [c.label for c in choice.candidates][:3] == ["mammal", "Felidae", "Panthera"]  # ranked by sitelinks


def test_wordnet_first_at_equal_distance_then_popularity():
    dog = entity([Ancestor("Q18498", "wolf", 180, 1), Ancestor("wn:canine.n.02", "canine", None, 1)], name="dog")
    assert choose(dog, CONFIG).natural_type == "canine"
    plain = entity([Ancestor("Q1", "wolf", 180, 1), Ancestor("Q2", "hound", 40, 1)], name="dog")
    assert choose(plain, CONFIG).natural_type == "wolf"


def test_threshold_then_any_common_noun_then_latin_then_root():
    rare_near = entity([Ancestor("Q1", "obscure group", 3, 1), Ancestor("Q2", "bird", 240, 3)])
    assert (choose(rare_near, CONFIG).natural_type, choose(rare_near, CONFIG).reason) == ("bird", "popular_common_noun")
    only_rare = entity([Ancestor("Q1", "obscure group", 3, 1), Ancestor("Q2", "Corvidae", 90, 1)])
    assert (choose(only_rare, CONFIG).natural_type, choose(only_rare, CONFIG).reason) == ("obscure group", "common_noun")
    latin = entity([Ancestor("Q1", "Corvus", 60, 1), Ancestor("Q2", "Corvidae", 90, 2)])
    assert (choose(latin, CONFIG).natural_type, choose(latin, CONFIG).reason) == ("Corvidae", "most_popular")
    bare = entity([Ancestor("Q16521", "taxon", 900, 1), Ancestor("Q9", None, 50, 1)], root="Q756")
    assert (choose(bare, CONFIG).natural_type, choose(bare, CONFIG).reason) == ("plant", "root_fallback")
    assert choose(entity([], root="Q424242"), CONFIG).reason == "no_candidate"


def test_candidates_skip_own_names_dedupe_labels_and_cap():
    many = [Ancestor(f"Q{i}", f"class {i}", i, 2) for i in range(1, 30)]
    self_named = entity(many + [Ancestor("Q99", "Lion", 999, 1), Ancestor("Q98", "class 5", 5, 1)], name="lion")
    found = candidates(self_named, CONFIG)
    assert len(found) == CONFIG.max_candidates
    assert "Lion" not in [c.label for c in found]
    assert [c.label for c in found][0] == "class 29"
    assert len({c.label for c in candidates(self_named, NaturalTypeConfig(max_candidates=50))}) == 29
    assert next(c for c in candidates(self_named, NaturalTypeConfig(max_candidates=50)) if c.label == "class 5").hops == 1


VOCABULARY = load_vocabulary()


def test_statements_about_looks_become_attributes_with_the_name_in_the_query():
    bear = entity([Ancestor("Q7377", "mammal", 230, 2)], name="polar bear",
                  visual_facts=[VisualFact("P462", "Q23444", "white"), VisualFact("P1552", "Q5", None)])
    made = kg_attributes(bear, "bear", VOCABULARY, 10, AttributeStats())
    assert made[0].category == "color" and made[0].attribute == "white" and made[0].query == "white polar bear"
    assert all("polar bear" in a.query for a in made)
    assert {a.category for a in made} >= {"behavior", "parts", "environment"}  # the mammal group
    assert len({a.query for a in made}) == len(made)


def test_plants_get_no_behaviour_and_categories_are_capped():
    oak = entity([Ancestor("wn:tree.n.01", "tree", None, 1)], name="sessile oak", root="Q756")
    made = kg_attributes(oak, "oak", VOCABULARY, 2, stats := AttributeStats())
    assert made and "behavior" not in {a.category for a in made}
    per_category = {c: sum(a.category == c for a in made) for c in {a.category for a in made}}
    assert max(per_category.values()) == 2
    assert stats.per_group == {"tree": 1}


def test_other_entities_use_the_other_base():
    bike = entity([Ancestor("Q42889", "vehicle", 150, 1)], name="bicycle", root="Q42889", domain="other",
                  visual_facts=[VisualFact("P527", "Q446", "wheel"), VisualFact("P186", "Q11427", "steel")])
    queries = [a.query for a in kg_attributes(bike, "vehicle", VOCABULARY, 10, AttributeStats())]
    assert queries[:2] == ["bicycle wheel", "steel bicycle"]
    assert "bicycle on the road" in queries and "photo of bicycle" in queries


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bases: []\n", "non-empty 'bases'"),
        ("bases:\n  - name: x\n    attributes:\n      colour: ['{} red']\n", "unknown category"),
        ("bases:\n  - name: x\n    attributes:\n      color: ['red']\n", "must contain '{}' exactly once"),
    ],
)
def test_a_broken_vocabulary_names_file_and_key(tmp_path, text, message):
    path = tmp_path / "vocabulary.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as error:
        load_vocabulary(str(path))
    assert str(path) in str(error.value)


@pytest.fixture(scope="module")
def enriched(tmp_path_factory):
    run = tmp_path_factory.mktemp("enriched") / "run"
    assert main(["-q", "kg", "--run", str(run), "--config", "demo", "--sources", "wikidata"]) == 0
    assert main(["-q", "enrich", "--run", str(run), "--config", "demo", "--top-k", "20"]) == 0
    return run


def test_every_entity_gets_a_natural_type_from_its_candidates(enriched):
    types = {row["entity_id"]: row for row in read_rows(enriched / "natural_types.parquet")}
    entities = list(read_entities(enriched / "entities.parquet"))
    assert set(types) == {e.id for e in entities}
    for row in types.values():
        assert row["natural_type"]
        if row["reason"] == "root_fallback":
            assert row["natural_type"] in CONFIG.root_types.values()
        else:
            assert row["natural_type"] in [c["label"] for c in row["candidates"]]
    # Wikidata alone (no WordNet merged here): within 3 hops the lion has only Latin taxa above it
    assert (types["Q140"]["natural_type"], types["Q140"]["reason"]) == ("Felidae", "most_popular")
    assert (types["Q15083"]["natural_type"], types["Q15083"]["reason"]) == ("mammal", "popular_common_noun")


def test_attributes_only_for_the_top_k_of_each_root(enriched):
    entities = list(read_entities(enriched / "entities.parquet"))
    with_attributes = {row["entity_id"] for row in read_rows(enriched / "attributes.parquet")}
    for root in {e.root for e in entities}:
        members = sorted((e for e in entities if e.root == root), key=lambda e: -(e.sitelinks or 0))
        chosen = {e.id for e in members if e.id in with_attributes}
        assert len(chosen) == min(20, len(members))
        threshold = min(e.sitelinks for e in members if e.id in chosen)
        assert all((e.sitelinks or 0) <= threshold for e in members if e.id not in chosen)


def test_enrich_stats_are_stored_and_printed(enriched, capsys):
    import json

    marker = json.loads((enriched / "stages" / "enrich.json").read_text())
    stats = marker["stats"]
    assert sum(stats["natural_types"]["reasons"].values()) == stats["entities"]
    assert sum(stats["attributes"]["per_category"].values()) == stats["attributes"]["total"]
    assert pq.read_metadata(enriched / "attributes.parquet").num_rows == stats["attributes"]["total"]
    assert "kg" in marker["inputs"]
    assert main(["enrich", "--run", str(enriched), "--config", "demo", "--top-k", "20"]) == 0
    out = capsys.readouterr().out
    assert "already complete" in out and "per category" in out


def test_enrich_needs_kg_first(tmp_path, capsys):
    assert main(["enrich", "--run", str(tmp_path / "empty"), "--config", "demo"]) == 1
    assert "run 'entitynet kg" in capsys.readouterr().err


def test_redoing_kg_invalidates_enrich(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["-q", "kg", "--run", run, "--config", "demo", "--sources", "wikidata", "--limit", "3"]) == 0
    assert main(["-q", "enrich", "--run", run, "--config", "demo"]) == 0
    assert main(["-q", "kg", "--run", run, "--config", "demo", "--sources", "wikidata", "--limit", "4", "--force"]) == 0
    assert main(["-q", "enrich", "--run", run, "--config", "demo"]) == 1
    error = capsys.readouterr().err
    assert "different configuration or inputs (its input kg changed;" in error, error
