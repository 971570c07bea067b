"""The Wikidata harvest against a real oxigraph server holding the sample graph."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyoxigraph
import pytest

from entitynet.config import KgConfig, SparqlConfig, WikidataConfig
from entitynet.kg.sparql import HttpTransport, SparqlClient, open_dump
from entitynet.kg.wikidata import WikidataHarvester
from entitynet.records import Entity

LIVING = ["Q729", "Q756", "Q764"]


def kg_config(page_size: int = 10_000, batch_size: int = 1_000, limit: int | None = None, **wikidata: object) -> KgConfig:
    return KgConfig(
        sources=["wikidata"],
        limit_per_root=limit,
        sparql=SparqlConfig(page_size=page_size, batch_size=batch_size, timeout=10, max_attempts=3, backoff=0.01,
                            contact="tests@example.org"),
        wikidata=WikidataConfig(**wikidata),
    )


def harvest_http(url: str, config: KgConfig, cache: Path | None = None) -> tuple[list[Entity], SparqlClient]:
    client = SparqlClient(HttpTransport(dataclasses.replace(config.sparql, endpoint=url)), cache)
    return list(WikidataHarvester(client, config).entities()), client


def by_id(entities: list[Entity]) -> dict[str, Entity]:
    return {entity.id: entity for entity in entities}


def test_small_root_gives_exactly_its_members(oxigraph):
    entities, _ = harvest_http(oxigraph.url, kg_config(roots=["Q764"], require_image=False))
    assert sorted(e.id for e in entities) == ["Q131227", "Q719725"]
    agaric = by_id(entities)["Q131227"]
    assert (agaric.name, agaric.taxon_name, agaric.domain, agaric.root) == ("fly agaric", "Amanita muscaria", "living", "Q764")
    assert agaric.ancestors[0].id == "Q764" and agaric.ancestors[0].label == "fungus"


def test_exclusions_remove_humans_fictional_and_individual_animals(oxigraph):
    # With images required, the lion is the only real organism of the sample that has one,
    # while named cats and the mythical Xiezhi have images too: only exclusion keeps them out.
    kept, _ = harvest_http(oxigraph.url, kg_config(roots=["Q729"]))
    assert [e.id for e in kept] == ["Q140"]

    unfiltered, _ = harvest_http(oxigraph.url, kg_config(roots=["Q729"], exclude=[]))
    ids = {e.id for e in unfiltered}
    assert {"Q140", "Q487324", "Q28792126"} <= ids  # lion, Xiezhi, the cat Gli
    assert len(ids) > 3


def test_exclusion_covers_the_class_its_subclasses_and_their_instances(oxigraph):
    everything, _ = harvest_http(oxigraph.url, kg_config(roots=["Q729"], require_image=False, exclude=[]))
    filtered, _ = harvest_http(oxigraph.url, kg_config(roots=["Q729"], require_image=False))
    removed = {e.id for e in everything} - {e.id for e in filtered}
    # human, a person, the legendary-creature class and Xiezhi, individual animal and a named cat
    assert {"Q5", "Q6512", "Q2239243", "Q487324", "Q795052", "Q28792126"} <= removed
    assert not any(e.name == 'Alfredo "Chocolate" Armenteros' for e in filtered)
    assert all(e.id not in removed for e in filtered)


def test_fields_labels_unicode_and_both_sitelinks_placements(oxigraph):
    entities = by_id(harvest_http(oxigraph.url, kg_config(roots=LIVING, require_image=False))[0])
    lion = entities["Q140"]
    assert lion.name == "lion" and lion.description == "species of big cat"
    assert lion.sitelinks == 256  # on the data node, as in the dumps and QLever
    assert entities["Q144"].sitelinks == 240  # on the item itself, as in WDQS
    assert {"Panthera leo", "African lion", "Asiatic lion"} <= set(lion.aliases)
    assert lion.common_names == ["African Lion", "Lion"]  # English only; the Afrikaans one is filtered
    assert lion.image == "https://commons.wikimedia.org/wiki/Special:FilePath/Lion_waiting_in_Namibia.jpg"
    assert lion.ancestors[0] .id == "Q127960" and lion.ancestors[0].label == "Panthera"
    assert [a.hops for a in lion.ancestors] == sorted(a.hops for a in lion.ancestors)
    assert entities["Q184222"].name == "Przewalski's horse"
    assert entities["Q311747"].name == "pōhutukawa"
    assert entities["Q1290970"].taxon_name == "Cupressus ×leylandii"


def test_label_language_fallbacks(oxigraph):
    entities = by_id(harvest_http(oxigraph.url, kg_config(roots=["Q756", "Q729"], require_image=False))[0])
    assert entities["Q332469"].name == "Lantana camara"  # only a "mul" label
    assert entities["Q739025"].name == "western green lizard"  # no label: its common name
    english_only = by_id(harvest_http(oxigraph.url, kg_config(roots=["Q756"], require_image=False, languages=["en"]))[0])
    assert english_only["Q332469"].name == "common lantana"


def test_top_n_per_root_by_sitelinks(oxigraph):
    config = kg_config(roots=["Q756", "Q729"], require_image=False)
    everything = harvest_http(oxigraph.url, config)[0]
    top = harvest_http(oxigraph.url, kg_config(roots=["Q756", "Q729"], require_image=False, limit=5))[0]
    for root in ("Q756", "Q729"):
        kept = [e for e in top if e.root == root]
        rest = [e for e in everything if e.root == root and e.id not in {k.id for k in kept}]
        assert len(kept) == 5
        assert [e.sitelinks for e in kept] == sorted((e.sitelinks for e in kept), reverse=True)
        assert max(e.sitelinks for e in rest) <= min(e.sitelinks for e in kept)


def test_pages_never_exceed_page_size_and_do_not_change_the_result(oxigraph, fault_proxy):
    reference = harvest_http(oxigraph.url, kg_config(roots=LIVING, require_image=False))[0]
    proxy = fault_proxy()
    paged, client = harvest_http(proxy.url, kg_config(roots=LIVING, require_image=False, page_size=7, batch_size=5))
    assert paged == reference
    assert max(proxy.forwarded_rows) <= 7
    assert client.stats.http.requests > 30  # it really paged


def test_user_agent_names_the_tool_and_contact(oxigraph, fault_proxy):
    proxy = fault_proxy()
    harvest_http(proxy.url, kg_config(roots=["Q764"], require_image=False))
    agents = {headers.get("User-Agent") for headers in proxy.requests}
    assert len(agents) == 1
    (agent,) = agents
    assert agent.startswith("EntityNet/") and "tests@example.org" in agent


def test_classes_mode_takes_subclasses_not_instances_and_honours_the_threshold(oxigraph):
    classes = by_id(harvest_http(oxigraph.url, kg_config(mode="classes", roots=["Q41176"], require_image=False))[0])
    assert "Q243" not in classes  # the Eiffel Tower is an instance of tower
    assert {"Q41176", "Q12518", "Q11303"} <= set(classes)
    assert all(e.domain == "other" for e in classes.values())
    popular = harvest_http(oxigraph.url, kg_config(mode="classes", roots=["Q41176"], require_image=False, min_sitelinks=120))[0]
    assert {e.id for e in popular} == {e.id for e in classes.values() if e.sitelinks >= 120}
    assert 0 < len(popular) < len(classes)


def test_statements_about_looks_come_with_their_labels(oxigraph):
    vehicles = by_id(harvest_http(oxigraph.url, kg_config(mode="classes", roots=["Q42889"], require_image=False))[0])
    assert {(f.property, f.id, f.label) for f in vehicles["Q11442"].visual_facts} == {
        ("P186", "Q11427", "steel"), ("P527", "Q446", "wheel"),
    }
    lion = by_id(harvest_http(oxigraph.url, kg_config(roots=["Q729"]))[0])["Q140"]
    assert sorted((f.property, f.id, f.label) for f in lion.visual_facts) == [("P1552", "Q120446", None), ("P1552", "Q81875", None)]


def test_entity_under_two_roots_is_kept_once(oxigraph):
    entities = harvest_http(oxigraph.url, kg_config(mode="classes", roots=["Q2095", "Q746549"], require_image=False))[0]
    ids = [e.id for e in entities]
    assert len(ids) == len(set(ids))
    assert by_id(entities)["Q177"].root == "Q2095"  # pizza: under dish, under food; the first root claims it


def test_dump_in_process_gives_the_same_entities_as_the_server(oxigraph, sample_ttl, tmp_path):
    config = kg_config(roots=LIVING, require_image=False)
    served = harvest_http(oxigraph.url, config)[0]
    client = SparqlClient(open_dump(sample_ttl, tmp_path), None)
    embedded = list(WikidataHarvester(client, config).entities())
    assert embedded == served
    assert len(embedded) >= 150


HOSTILE_LABELS = [
    'quote " and } brace # hash',
    "back\\slash ' apostrophe \n newline",
    "} } FILTER(false) { # injection attempt",
    "emoji 🦁 and RTL עברית",
]


def test_hostile_labels_survive_and_cannot_change_queries(tmp_path):
    lines = [
        "@prefix wd: <http://www.wikidata.org/entity/> .",
        "@prefix wdt: <http://www.wikidata.org/prop/direct/> .",
        "@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .",
    ]
    for number, label in enumerate(HOSTILE_LABELS, start=1):
        escaped = label.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        lines.append(f'wd:Q{number} wdt:P171 wd:Q764 ; rdfs:label "{escaped}"@en .')
    graph = tmp_path / "hostile.ttl"
    graph.write_text("\n".join(lines), encoding="utf-8")
    client = SparqlClient(open_dump(graph, tmp_path / "cache"), None)
    entities = by_id(list(WikidataHarvester(client, kg_config(roots=["Q764"], require_image=False)).entities()))
    assert {entities[f"Q{n}"].name for n in range(1, len(HOSTILE_LABELS) + 1)} == set(HOSTILE_LABELS)


def test_escaped_literals_round_trip_through_a_real_engine():
    from entitynet.kg.rdf import literal

    store = pyoxigraph.Store()
    for text in HOSTILE_LABELS + ["tab\there", "\"\"\"triple\"\"\"", "'''"]:
        (solution,) = list(store.query(f"SELECT ?x WHERE {{ BIND({literal(text)} AS ?x) }}"))
        assert solution["x"].value == text


@pytest.mark.parametrize("bad", ["Q1 } ", "wd:Q1", "Q01", "P31", "", "Q1\n"])
def test_item_ids_are_validated_before_they_reach_a_query(bad):
    from entitynet.kg import wikidata_queries

    with pytest.raises(ValueError):
        wikidata_queries.facts([bad], ["label"], ["en"])


def test_compressed_dumps_load_and_unknown_formats_are_refused(sample_ttl, tmp_path):
    import gzip

    from entitynet.kg.sparql import SparqlError

    packed = tmp_path / "sample.ttl.gz"
    packed.write_bytes(gzip.compress(sample_ttl.read_bytes()))
    config = kg_config(roots=["Q764"], require_image=False)
    plain = list(WikidataHarvester(SparqlClient(open_dump(sample_ttl, tmp_path / "a"), None), config).entities())
    gzipped = list(WikidataHarvester(SparqlClient(open_dump(packed, tmp_path / "b"), None), config).entities())
    assert gzipped == plain and len(plain) == 2

    reopened = open_dump(packed, tmp_path / "b")  # loaded once, reopened read-only
    assert list(WikidataHarvester(SparqlClient(reopened, None), config).entities()) == plain

    odd = tmp_path / "graph.json"
    odd.write_text("{}")
    with pytest.raises(SparqlError, match="unknown format"):
        open_dump(odd, tmp_path / "c")
    broken = tmp_path / "broken.ttl"
    broken.write_text("wd:Q1 this is not turtle")
    with pytest.raises(SparqlError, match="not valid ttl"):
        open_dump(broken, tmp_path / "d")


def test_parent_taxa_keep_their_rank_and_a_taxon_of_two_ranks_gets_none(tmp_path):
    graph = tmp_path / "ranks.ttl"
    graph.write_text("\n".join([
        "@prefix wd: <http://www.wikidata.org/entity/> .",
        "@prefix wdt: <http://www.wikidata.org/prop/direct/> .",
        "@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .",
        'wd:Q25306 wdt:P171 wd:Q764 ; wdt:P105 wd:Q36602 ; rdfs:label "Carnivora"@en .',  # order
        'wd:Q25265 wdt:P171 wd:Q25306 ; wdt:P105 wd:Q35409 ; rdfs:label "Felidae"@en .',  # family
        'wd:Q127960 wdt:P171 wd:Q25265 ; wdt:P105 wd:Q34740 ; rdfs:label "Panthera"@en .',  # genus
        'wd:Q140 wdt:P171 wd:Q127960 ; wdt:P31 wd:Q16521 ; wdt:P105 wd:Q7432 ; rdfs:label "lion"@en .',
        'wd:Q16521 rdfs:label "taxon"@en .',
        'wd:Q2 wdt:P171 wd:Q3 ; rdfs:label "odd"@en .',
        'wd:Q3 wdt:P171 wd:Q764 ; wdt:P105 wd:Q34740, wd:Q35409 ; rdfs:label "two ranks"@en .',
    ]), encoding="utf-8")
    client = SparqlClient(open_dump(graph, tmp_path / "cache"), None)
    entities = by_id(list(WikidataHarvester(client, kg_config(roots=["Q764"], require_image=False)).entities()))
    ranks = {a.id: (a.rank, a.hops) for a in entities["Q140"].ancestors}
    assert ranks == {"Q127960": ("genus", 1), "Q16521": (None, 1), "Q25265": ("family", 2), "Q25306": ("order", 3)}
    assert [a.rank for a in entities["Q2"].ancestors if a.id == "Q3"] == [None]
