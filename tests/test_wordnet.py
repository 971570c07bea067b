"""The real WordNet 3.0 (Debian's wordnet-base in CI, or nltk's download) and the merge rules."""

from __future__ import annotations

import pytest

from entitynet.config import WordnetConfig
from entitynet.kg import wordnet
from entitynet.kg.merge import WordNetMerger
from entitynet.records import Ancestor, Entity


@pytest.fixture(scope="session")
def reader(wordnet_reader):
    return wordnet_reader


@pytest.fixture(scope="session")
def living(reader):
    return {e.id: e for e in wordnet.WordNetHarvester(reader, WordnetConfig()).entities()}


@pytest.mark.slow
def test_livingthings_harvest(reader, living):
    assert reader.get_version() == "3.0"
    assert len(living) > 8000
    lion = living["wn:lion.n.01"]
    assert lion.name == "lion" and lion.source == "wordnet" and lion.domain == "living"
    assert lion.aliases == ["king of beasts", "Panthera leo"]
    assert lion.lemmas == ["lion", "king of beasts", "Panthera leo"]
    assert lion.taxon_name == "Panthera leo"
    assert lion.description.startswith("large gregarious predatory feline")
    assert lion.root == "wn:living_thing.n.01"
    assert [(a.id, a.hops) for a in lion.ancestors[:2]] == [("wn:big_cat.n.01", 1), ("wn:feline.n.01", 2)]
    assert all(a.sitelinks is None for a in lion.ancestors)


@pytest.mark.slow
def test_blacklisted_subtrees_stay_out(reader, living):
    for name in WordnetConfig().blacklist:
        synset = reader.synset(name)
        subtree = {f"wn:{s.name()}" for s in synset.closure(lambda s: s.hyponyms() + s.instance_hyponyms())}
        assert f"wn:{name}" not in living
        only_there = {s for s in subtree if not _reachable_elsewhere(reader, s, name)}
        assert not (only_there & living.keys())
    assert "wn:teacher.n.01" not in living and "wn:dog.n.01" in living


def _reachable_elsewhere(reader, synset_id, blacklisted):
    """A synset with a second hypernym path outside the blacklisted subtree may stay."""
    synset = reader.synset(synset_id[3:])
    return any(blacklisted not in {s.name() for s in path} for path in synset.hypernym_paths())


@pytest.mark.slow
def test_limit_keeps_the_most_frequent(reader):
    top = list(wordnet.WordNetHarvester(reader, WordnetConfig(), limit_per_root=25).entities())
    assert len(top) == 25
    counts = [sum(lemma.count() for lemma in reader.synset(e.id[3:]).lemmas()) for e in top]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]


def test_missing_data_says_how_to_install(tmp_path):
    with pytest.raises(wordnet.WordNetMissing) as missing:
        wordnet.load_wordnet(str(tmp_path))
    assert "nltk.download('wordnet')" in str(missing.value)
    assert "wordnet-base" in str(missing.value)


def test_unknown_root_synset_is_a_clear_error(reader):
    config = WordnetConfig(roots=["no_such_thing.n.01"])
    with pytest.raises(wordnet.WordNetMissing, match="no_such_thing.n.01"):
        list(wordnet.WordNetHarvester(reader, config).entities())


def synset(name: str, aliases: list[str], taxon: str | None = None, sense: int = 1) -> Entity:
    return Entity(
        id=f"wn:{name.replace(' ', '_')}.n.{sense:02d}", source="wordnet", name=name, domain="living",
        root="wn:living_thing.n.01", aliases=aliases, lemmas=[name, *aliases], taxon_name=taxon,
        ancestors=[Ancestor("wn:parent.n.01", "parent", None, 1)],
    )


def item(qid: str, name: str, taxon: str | None = None, domain: str = "living") -> Entity:
    return Entity(id=qid, source="wikidata", name=name, domain=domain, root="Q729", taxon_name=taxon, aliases=[])


def test_merge_by_taxon_name_then_by_unambiguous_name():
    lion = synset("lion", ["king of beasts", "Panthera leo"], "Panthera leo")
    jaguar_cat = synset("jaguar", ["panther", "Panthera onca"], "Panthera onca")
    jaguar_other = synset("jaguar", ["other jaguar"], sense=2)
    dog = synset("dog", ["domestic dog"])
    merger = WordNetMerger([lion, jaguar_cat, jaguar_other, dog])

    merged_lion = merger.merge(item("Q140", "lion", "Panthera leo"))
    assert merged_lion.same_as == [lion.id]
    assert merged_lion.lemmas == ["lion", "king of beasts", "Panthera leo"] and merged_lion.aliases == []
    assert merged_lion.ancestors[-1].id == "wn:parent.n.01"

    # "jaguar" names two synsets: only the taxon name may decide
    assert merger.merge(item("Q35694", "jaguar")).same_as == []
    assert merger.merge(item("Q35694", "jaguar", "Panthera onca")).same_as == [jaguar_cat.id]

    assert merger.merge(item("Q144", "Dog")).same_as == [dog.id]
    assert merger.merge(item("Q999", "dog")).same_as == []  # a synset joins one entity only
    assert merger.merge(item("Q1420", "lion", domain="other")).same_as == []  # wrong domain
    assert [s.id for s in merger.remaining()] == [jaguar_other.id]
    assert merger.merged == {"taxon_name": 2, "name": 1}
