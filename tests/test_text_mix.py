"""The paper's text mix: empirical frequencies over many draws against the stated weights, every
fallback, and draws that depend on (seed, epoch, image) only."""

from __future__ import annotations

import math
from collections import Counter

import pytest

pytest.importorskip("torch")

from entitynet.training.config import NounTextConfig, TextConfig
from entitynet.training.text_mix import query_options, sample_text, training_texts

DRAWS = 20_000
LION = {"id": "Q140", "name": "lion", "aliases": ["Panthera leo"], "common_names": [], "taxon_name": "Panthera leo",
        "description": "species of big cat", "natural_type": "big cat", "natural_type_aliases": ["large cat"],
        "natural_type_description": "large wild cat", "domain": "living"}
NOUN = {"text": "lion", "kind": "noun", "entity_id": "Q140", "attribute": None}


def frequencies(row: dict, text: TextConfig, draws: int = DRAWS) -> dict[str, float]:
    picks = Counter(sample_text({**row, "image_id": f"img{n}"}, text, seed=0, epoch=0) for n in range(draws))
    return {option: count / draws for option, count in picks.items()}


def assert_close(observed: dict[str, float], expected: dict[str, float], draws: int = DRAWS) -> None:
    assert set(observed) == set(expected), (sorted(observed), sorted(expected))
    for option, p in expected.items():
        bound = 4 * math.sqrt(p * (1 - p) / draws) + 1e-3  # four standard errors
        assert abs(observed[option] - p) < bound, f"{option!r}: {observed[option]:.4f} vs {p:.4f}"


def test_alt_texts_half_the_time_else_a_query():
    row = {"alt_texts": ["A lion resting", "Lion at dusk"], "queries": [NOUN], "entities": [LION]}
    observed = frequencies(row, TextConfig())
    alt = observed.pop("A lion resting") + observed.pop("Lion at dusk")
    assert abs(alt - 0.5) < 0.015
    assert abs(sum(observed.values()) - 0.5) < 0.015


def test_noun_query_branches_follow_the_weights():
    # living thing: hierarchy chance 0.1. Branch weights (keep 0.4, synonym 0.6, definition 0.1),
    # shared by their texts; "lion" is both the query (0.4) and a synonym (0.54/2): counted once, at 0.4.
    keep, synonym, type_synonym, definition, type_definition = 0.4, 0.6 * 0.9, 0.6 * 0.1, 0.1 * 0.9, 0.1 * 0.1
    weights = {"lion": keep, "Panthera leo": synonym / 2, "big cat": type_synonym / 2, "large cat": type_synonym / 2,
               "species of big cat": definition, "large wild cat": type_definition}
    total = sum(weights.values())
    observed = frequencies({"alt_texts": [], "queries": [NOUN], "entities": [LION]}, TextConfig())
    assert_close(observed, {text: weight / total for text, weight in weights.items()})


def test_the_hierarchy_chance_is_higher_for_other_things():
    chair = {"id": "Q15026", "name": "chair", "aliases": [], "description": None, "natural_type": "furniture",
             "natural_type_aliases": [], "natural_type_description": None, "domain": "other"}
    query = {"text": "chair", "kind": "noun", "entity_id": "Q15026", "attribute": None}
    # keep 0.4 and synonym "chair" (0.6 x 0.8 = 0.48) are the same text, counted at its heaviest;
    # the natural type 0.6 x 0.2 (other things: hierarchy chance 0.2)
    options = {text: weight for text, weight, _ in query_options(query, chair, TextConfig())}
    assert options == pytest.approx({"chair": 0.48 / 0.6, "furniture": 0.12 / 0.6})


def test_attribute_query_branches_follow_the_weights():
    leopard = {"id": "Q34706", "name": "leopard", "aliases": [], "description": "large cat of Africa",
               "natural_type": "big cat", "natural_type_aliases": [], "domain": "living"}
    query = {"text": "spotted leopard", "kind": "attrnoun", "entity_id": "Q34706", "attribute": "spotted"}
    own, kin = 0.9, 0.1
    # keep 1.0; synonym 0.2; pseudo query 0.2 ("spotted leopard" | "leopard spotted"); the query with
    # the name replaced 0.2 (here: the query again); attribute alone 0.2; definition 0.05.
    weights = {
        "spotted leopard": 1.0,  # also a pseudo query and a replacement: counted once, at its heaviest
        "leopard": 0.2 * own,
        "big cat": 0.2 * kin,
        "leopard spotted": 0.2 * own / 2,
        "spotted big cat": 0.2 * kin,  # type replacement (0.02) beats the type pseudo query (0.01)
        "big cat spotted": 0.2 * kin / 2,
        "spotted": 0.2,
        "large cat of Africa": 0.05 * own,
    }
    total = sum(weights.values())
    observed = frequencies({"alt_texts": [], "queries": [query], "entities": [leopard]}, TextConfig())
    assert_close(observed, {text: weight / total for text, weight in weights.items()})


def test_attr_queries_replace_the_natural_type_they_name():
    # "maned big cat" is a query of the natural type: its name is cut out and the type's names go
    # in (the old mix cut "big cat" and put the lion's names in: "maned lion", "maned Panthera leo")
    query = {"text": "maned big cat", "kind": "attr", "entity_id": "Q140", "attribute": "maned"}
    options = query_options(query, LION, TextConfig())
    assert {text for text, _, branch in options if branch == "replace_entity"} == {"maned large cat"}
    assert not [text for text, _, _ in options if "lion" in text.lower() or "Panthera" in text]


CATS = [{"id": id, "name": name, "aliases": [alias], "common_names": [], "taxon_name": None, "description": description,
         "natural_type": "big cat", "natural_type_aliases": ["large cat"],
         "natural_type_description": "any of several large cats", "domain": "living"}
        for id, name, alias, description in (("Q34706", "leopard", "Panthera pardus", "large cat of Africa and Asia"),
                                             ("Q35694", "jaguar", "Panthera onca", "large cat of the Americas"),
                                             ("Q35255", "cheetah", "Acinonyx jubatus", "fast large cat"))]


def test_a_shared_attr_query_is_named_by_its_natural_type_not_its_entities():
    # an image found by "spotted big cat", the one query of the type big cat for three entities:
    # the old mix named leopard, jaguar or cheetah in 26% of its texts (synonyms, pseudo queries and
    # replacements of each use's entity); now the texts are those of the type, for every use alike
    row = {"alt_texts": [], "entities": CATS,
           "queries": [{"text": "spotted big cat", "kind": "attr", "entity_id": cat["id"], "attribute": "spotted"}
                       for cat in CATS]}
    own = 0.9  # living: hierarchy chance 0.1, and the type's own type is not in the row
    weights = {
        "spotted big cat": 1.0,  # kept; also a pseudo query and a replacement
        "big cat": 0.2 * own / 2, "large cat": 0.2 * own / 2,
        "spotted large cat": 0.2 * own / 2,  # replacement (0.09) beats pseudo query (0.045)
        "big cat spotted": 0.2 * own / 4, "large cat spotted": 0.2 * own / 4,
        "spotted": 0.2,
        "any of several large cats": 0.05 * own,
    }
    total = sum(weights.values())
    observed = frequencies(row, TextConfig())
    assert_close(observed, {text: weight / total for text, weight in weights.items()})
    # beside the leopard's noun query, the shared query is one query of two, not three uses of four
    noun = {"text": "leopard", "kind": "noun", "entity_id": "Q34706", "attribute": None}
    observed = frequencies({**row, "queries": [noun, *row["queries"]]}, TextConfig(), 4000)
    from_noun = sum(p for t, p in observed.items() if "leopard" in t or "Panthera" in t or "Africa" in t)
    # the noun query names the leopard with 0.4 + 0.27 + 0.09 of its 0.83 (the rest: the type's
    # names and definition); picked half the time (0.46; the old mix picked it a quarter: 0.23)
    assert abs(from_noun - 0.5 * 0.76 / 0.83) < 0.032


def test_the_replace_branch_never_puts_a_name_into_a_text_that_does_not_name_it():
    leopard = {**CATS[0], "natural_type": "cat", "natural_type_aliases": ["feline"]}
    text = TextConfig()
    # an attribute+noun query that does not name its entity: no replacement at all (the authors'
    # rule); the old mix cut "cat" (the natural type) and filled in "leopard"
    attrnoun = {"text": "cat food", "kind": "attrnoun", "entity_id": "Q34706", "attribute": "food"}
    assert not [t for t, _, b in query_options(attrnoun, leopard, text) if "replace" in b]
    # a type-level attr query: the type's names only
    attr = {**attrnoun, "kind": "attr"}
    options = [t for t, _, _ in query_options(attr, leopard, text)]
    assert "feline food" in options
    assert not [t for t in options if "leopard" in t or "Panthera" in t]


def test_an_attr_query_that_names_its_entity_is_taken_at_the_entitys_level():
    # an import whose attr query points at the natural type itself (the authors' release): the
    # entity is "big cat", its natural type "animal" is the level above
    big_cat = {"id": "Q1", "name": "big cat", "aliases": ["large cat"], "description": "any of several large cats",
               "natural_type": "animal", "natural_type_aliases": ["beast"], "domain": "living"}
    query = {"text": "spotted big cat", "kind": "attr", "entity_id": "Q1", "attribute": "spotted"}
    options = {(t, b) for t, _, b in query_options(query, big_cat, TextConfig())}
    assert {("large cat", "synonym"), ("animal", "type_synonym"), ("spotted beast", "type_replace_entity"),
            ("spotted large cat", "replace_entity")} <= options


def test_fallbacks_drop_the_branches_a_row_cannot_serve():
    text = TextConfig()
    bare = {"id": "Q1", "name": "okapi", "domain": "living"}  # no alias, no definition, no natural type
    query = {"text": "striped okapi", "kind": "attrnoun", "entity_id": "Q1", "attribute": None}  # no attribute
    # no attribute: no pseudo query, no attribute alone; no natural type, no description: none of
    # theirs; no alias: replacing the name gives the query again, counted once
    branches = {branch for _, _, branch in query_options(query, bare, text)}
    assert branches == {"keep", "synonym"}
    named = {**bare, "aliases": ["Okapia johnstoni"]}
    assert {t for t, _, b in query_options(query, named, text) if b == "replace_entity"} == {"striped Okapia johnstoni"}
    # the query's entity is not in the row: the query itself
    assert [t for t, _, _ in query_options({**query, "entity_id": "Q2"}, None, text)] == ["striped okapi"]
    # every weight zero: the query itself
    zero = TextConfig(noun=NounTextConfig(keep=0, synonym=0, definition=0))
    assert query_options(NOUN, LION, zero) == [("lion", 1.0, "keep")]
    # no alt text: always a query's text; no query: always an alt text; neither: a clear error
    assert "A lion" not in frequencies({"alt_texts": [], "queries": [NOUN], "entities": [LION]}, text, 500)
    assert frequencies({"alt_texts": ["A lion"], "queries": [], "entities": []}, text, 200) == {"A lion": 1.0}
    with pytest.raises(ValueError, match="neither an alt text nor a query"):
        sample_text({"image_id": "x", "alt_texts": [" "], "queries": [], "entities": []}, text, 0, 0)


def test_a_draw_depends_on_seed_epoch_and_image_only():
    row = {"image_id": "abc", "alt_texts": ["A lion resting"], "queries": [NOUN], "entities": [LION]}
    text = TextConfig()
    assert sample_text(row, text, 0, 3) == sample_text(dict(reversed(list(row.items()))), text, 0, 3)
    assert len({sample_text(row, text, 0, epoch) for epoch in range(40)}) > 2  # epochs pair differently
    assert len({sample_text(row, text, seed, 0) for seed in range(40)}) > 2


def test_training_texts_cover_every_option():
    row = {"image_id": "abc", "alt_texts": ["A lion resting"], "queries": [NOUN], "entities": [LION]}
    texts = set(training_texts([row], TextConfig()))
    assert {"A lion resting", "lion", "Panthera leo", "big cat", "large cat", "species of big cat"} <= texts
