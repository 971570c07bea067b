"""acc1 at every rank of a tree (issue 22 item 5): a hand-checked tree with known answers at the
scoring function, the lineage the dataset carries, and one pass through the evaluation of built
rows (real CLIPModel, real embeddings, predictions fixed by construction)."""

from __future__ import annotations

import pytest

from entitynet.build.lineage import lineage
from entitynet.records import Ancestor, Entity

# 6 species in 3 genera in 2 families, one order; ids are the taxa
TREE = {
    "s1": {"genus": "G1", "family": "F1", "order": "O1"}, "s2": {"genus": "G1", "family": "F1", "order": "O1"},
    "s3": {"genus": "G2", "family": "F1", "order": "O1"}, "s4": {"genus": "G2", "family": "F1", "order": "O1"},
    "s5": {"genus": "G3", "family": "F2", "order": "O1"}, "s6": {"genus": "G3", "family": "F2", "order": "O1"},
}
CLASSES = list(TREE)


def test_a_hand_checked_tree_scores_as_counted():
    from entitynet.training.evaluation.ranks import rank_accuracies

    # (true, predicted): right species; same genus; same family, other genus; other family; right species
    pairs = [("s1", "s1"), ("s1", "s2"), ("s3", "s1"), ("s5", "s3"), ("s6", "s6"), ("s4", "s6")]
    top1 = [CLASSES.index(predicted) for _, predicted in pairs]
    references = [[CLASSES.index(true)] for true, _ in pairs]
    scores, counted = rank_accuracies(top1, references, [TREE[c] for c in CLASSES])
    assert scores == {"acc1_species": 2 / 6, "acc1_genus": 3 / 6, "acc1_family": 4 / 6, "acc1_order": 1.0}
    assert counted == {"acc1_species": 6, "acc1_genus": 6, "acc1_family": 6, "acc1_order": 6}


def test_images_without_a_lineage_are_not_scored_and_a_predicted_class_without_the_rank_is_wrong():
    from entitynet.training.evaluation.ranks import rank_accuracies

    lineages = [{"genus": "G1", "family": "F1"}, {"family": "F1"}, {}, {"hypernym1": "wn:cat.n.01"},
                {"hypernym1": "wn:cat.n.01", "hypernym2": "wn:feline.n.01"}]
    # image 0: true 0, predicted 1 (no genus: wrong at genus, same family); image 1: true 2 (no
    # lineage, predicted 0: counted at species only if taxonomic - it is not); image 2: true 3,
    # predicted 4 (same hypernym1); image 3: true 4, predicted 4
    scores, counted = rank_accuracies([1, 0, 4, 4], [[0], [2], [3], [4]], lineages)
    assert scores == {"acc1_species": 0.0, "acc1_genus": 0.0, "acc1_family": 1.0, "acc1_hypernym1": 1.0,
                      "acc1_hypernym2": 1.0}
    assert counted == {"acc1_species": 1, "acc1_genus": 1, "acc1_family": 1, "acc1_hypernym1": 2, "acc1_hypernym2": 2}


def test_every_rank_of_a_chain_is_scored_over_the_same_images_so_the_table_never_falls_up_the_tree():
    """The demo's table read family 0.636, order 0.357: each rank counted only the images whose
    class had it, so the ranks scored different images. Now a chain's ranks share one set of
    images, and a class without an ancestor at a rank is judged at the nearest rank below it has
    (a prediction in the same genus is in the same family, even where a family is not recorded)."""
    from entitynet.training.evaluation.ranks import rank_accuracies

    lineages = [
        {"genus": "G1", "family": "F1", "order": "O1"},  # 0
        {"genus": "G1", "family": "F1", "order": "O1"},  # 1
        {"genus": "G2", "family": "F2", "order": "O1"},  # 2
        {"genus": "G3", "family": "F3"},  # 3: no order recorded
        {"genus": "G3"},  # 4: genus only
        {"genus": "G4", "family": "F4", "order": "O2"},  # 5
        {"order": "O1"},  # 6: a family-level entity (no genus, no family of its own)
    ]
    # (true, predicted): 0->1 same genus; 2->0 same order; 3->4 same genus (4's family unknown);
    # 3->3 right; 5->0 other order; 6->2 same order (6 has no genus nor family: judged as itself)
    pairs = [(0, 1), (2, 0), (3, 4), (3, 3), (5, 0), (6, 2)]
    scores, counted = rank_accuracies([p for _, p in pairs], [[t] for t, _ in pairs], lineages)
    assert counted == dict.fromkeys(["acc1_species", "acc1_genus", "acc1_family", "acc1_order"], 6)
    assert scores == {"acc1_species": 1 / 6, "acc1_genus": 3 / 6, "acc1_family": 3 / 6, "acc1_order": 5 / 6}
    values = list(scores.values())
    assert values == sorted(values)


def test_a_class_that_is_another_classs_ancestor_falls_in_that_taxon():
    """The entity Felidae beside the lion: a lineage lists ancestors only, so the first version
    scored Felidae for a lion's picture wrong at the family."""
    from entitynet.training.evaluation.ranks import rank_accuracies

    ids = ["lion", "Felidae", "wolf"]
    lineages = [{"genus": "Panthera", "family": "Felidae", "order": "Carnivora"},
                {"order": "Carnivora"}, {"genus": "Canis", "family": "Canidae", "order": "Carnivora"}]
    # a lion predicted Felidae; Felidae predicted lion; a wolf predicted Felidae
    scores, _ = rank_accuracies([1, 0, 1], [[0], [1], [2]], lineages, ids)
    assert scores == {"acc1_species": 0.0, "acc1_genus": 0.0, "acc1_family": 2 / 3, "acc1_order": 1.0}


def test_an_image_of_several_entities_is_right_at_a_rank_when_any_of_them_shares_it():
    from entitynet.training.evaluation.ranks import rank_accuracies

    lineages = [TREE["s1"], TREE["s3"], TREE["s5"]]
    scores, _ = rank_accuracies([2], [[0, 1]], lineages)  # s5 for an image of s1 and s3: only the order matches
    assert scores == {"acc1_species": 0.0, "acc1_genus": 0.0, "acc1_family": 0.0, "acc1_order": 1.0}


def test_the_lineage_keeps_ranked_taxa_and_one_hypernym_per_level():
    entity = Entity("Q140", "wikidata", "lion", "living", "Q729", ancestors=[
        Ancestor("Q16521", "taxon", 900, 1),  # P31: no rank, left out
        Ancestor("Q127960", "Panthera", 90, 1, rank="genus"),
        Ancestor("Q25265", "Felidae", 150, 2, rank="family"),
        Ancestor("Q25306", "Carnivora", 160, 3, rank="order"),
        Ancestor("wn:big_cat.n.01", "big cat", None, 1),
        Ancestor("wn:feline.n.01", "feline", None, 2),
        Ancestor("wn:other.n.01", "other", None, 2),
    ])
    assert lineage(entity) == [
        {"rank": "genus", "id": "Q127960", "name": "Panthera"}, {"rank": "family", "id": "Q25265", "name": "Felidae"},
        {"rank": "order", "id": "Q25306", "name": "Carnivora"},
        {"rank": "hypernym1", "id": "wn:big_cat.n.01", "name": "big cat"},
        {"rank": "hypernym2", "id": "wn:feline.n.01", "name": "feline"}]
    two_genera = Entity("Q1", "wikidata", "x", "living", "Q729", ancestors=[
        Ancestor("Q2", "A", 1, 1, rank="genus"), Ancestor("Q3", "B", 1, 1, rank="genus")])
    assert lineage(two_genera) == []  # which genus is the right one is not guessed


def test_built_rows_are_scored_at_every_rank_through_the_evaluation(tmp_path):
    """Rows as the builder writes them (entities with their lineage); the model is a real tiny
    CLIPModel whose image embedding is set to a class's text embedding, so each image predicts the
    class chosen for it: the same six answers as the hand-checked tree above."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import io

    from eval_data import tiny_clip
    from PIL import Image

    from entitynet.training.evaluation import evaluate_built_dataset
    from entitynet.training.evaluation.models import load_model

    clip = load_model(str(tiny_clip(tmp_path / "clip", ["s1 s2 s3 s4 s5 s6"] * 3)))
    entities = {c: {"id": c, "name": c, "aliases": [], "lineage": [{"rank": r, "id": t, "name": t} for r, t in TREE[c].items()]}
                for c in CLASSES}
    # the tree's six answers, and an image of s2 so that s2 is one of the classes (they are the rows' entities)
    truth_and_prediction = [("s1", "s1"), ("s1", "s2"), ("s3", "s1"), ("s5", "s3"), ("s6", "s6"), ("s4", "s6"), ("s2", "s2")]
    rows = []
    for n, (true, _) in enumerate(truth_and_prediction):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (40 * n, 0, 0)).save(buffer, format="PNG")
        rows.append({"image": {"bytes": buffer.getvalue(), "path": None}, "image_id": str(n), "alt_texts": [],
                     "entities": [entities[true]]})
    # the image tower's output replaced: image n embeds as the text of its predicted class
    with torch.no_grad():
        texts = clip.tokenizer(CLASSES, padding=True, return_tensors="pt")
        class_embeddings = clip.model.get_text_features(**texts)
        class_embeddings = getattr(class_embeddings, "pooler_output", class_embeddings)
    targets = torch.stack([class_embeddings[CLASSES.index(p)] for _, p in truth_and_prediction])

    def image_features(pixel_values, **_):  # one batch of every row, in row order
        return targets[:len(pixel_values)]

    clip.model.get_image_features = image_features
    metrics = evaluate_built_dataset(clip.model, clip.tokenizer, clip.processor, rows, templates=("{c}",),
                                     retrieval_over_alt_texts=False, batch_size=len(rows))
    assert metrics["acc1"] == pytest.approx(3 / 7)
    assert (metrics["acc1_species"], metrics["acc1_genus"], metrics["acc1_family"], metrics["acc1_order"]) == \
        pytest.approx((3 / 7, 4 / 7, 5 / 7, 1.0))
    assert "acc1_class" not in metrics and "acc1_hypernym1" not in metrics  # ranks no class has


def test_a_built_dataset_carries_the_lineage_and_its_copy_is_scored_at_every_rank(tmp_path, capsys):
    """Entities with ranked parent taxa -> entitynet build -> the dataset folder copied away from
    its run -> entitynet eval reports acc1 at each rank, from the rows alone."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import json
    import shutil

    import datasets
    from eval_data import tiny_clip
    from image_host import picture
    from test_build import stored, write_images

    from entitynet.cli import main
    from entitynet.records import NaturalType, Query, QueryUse
    from entitynet.rundir import RunDir
    from entitynet.tables import (
        NATURAL_TYPE_SCHEMA,
        QUERY_SCHEMA,
        RecordWriter,
        entity_writer,
        natural_type_to_row,
        query_to_row,
    )

    run = RunDir(tmp_path / "run")
    taxa = {"genus": ("Q2", "Q3", "Q4"), "family": ("Q5", "Q5", "Q6")}
    entities = []
    for n, species in enumerate(CLASSES):
        genus, family = taxa["genus"][n // 2], taxa["family"][n // 2]
        entities.append(Entity(id=f"Q{100 + n}", source="wikidata", name=f"species {species}", domain="living",
                               root="Q729", sitelinks=10, ancestors=[
                                   Ancestor("Q16521", "taxon", 900, 1), Ancestor(genus, f"genus {genus}", 5, 1, rank="genus"),
                                   Ancestor(family, f"family {family}", 5, 2, rank="family")]))
    with entity_writer(run.path("entities.parquet")) as writer:
        writer.write_all(entities)
    with RecordWriter(run.path("natural_types.parquet"), NATURAL_TYPE_SCHEMA, natural_type_to_row) as writer:
        writer.write_all(NaturalType(e.id, "animal", "test", "kg") for e in entities)
    with RecordWriter(run.path("queries.parquet"), QUERY_SCHEMA, query_to_row) as writer:
        writer.write_all([Query(f"q-{e.id}", e.name, None, [QueryUse("noun", e.id)]) for e in entities])
    rows = [stored(f"https://example.org/{e.id}-{copy}.jpg", picture(96, 64, 2 * n + copy + 1), [f"q-{e.id}"])
            for n, e in enumerate(entities) for copy in range(2)]
    write_images(run, rows, {"stored": len(rows), "urls": len(rows), "reasons": {}})
    assert main(["build", "--run", str(run.root), "--config", "demo", "--set", "build.validation_fraction=0",
                 "--set", "build.test_fraction=0", "--set", "build.seen_test_fraction=0"]) == 0
    copy = tmp_path / "hub-copy"
    shutil.copytree(run.path("dataset"), copy)
    shutil.rmtree(run.root)

    built = datasets.load_dataset(str(copy), "livingthings", split="train")
    lion = next(e for row in built for e in row["entities"] if e["id"] == "Q100")
    assert lion["lineage"] == [{"rank": "genus", "id": "Q2", "name": "genus Q2"},
                               {"rank": "family", "id": "Q5", "name": "family Q5"}]

    model = tiny_clip(tmp_path / "clip", [e.name for e in entities] * 3)
    out = tmp_path / "result.json"
    assert main(["eval", "--model", str(model), "--dataset", str(copy), "--config", "livingthings", "--split", "train",
                 "--output", str(out), "--cpu", "--no-progress"]) == 0
    record = json.loads(out.read_text())
    metrics = record["metrics"]
    assert metrics["acc1_species"] == metrics["acc1"]  # every class is a ranked taxon's species
    assert metrics["acc1"] <= metrics["acc1_genus"] <= metrics["acc1_family"] <= 1.0
    assert "acc1_order" not in metrics
    assert record["rank_images"] == {"acc1_species": 12, "acc1_genus": 12, "acc1_family": 12}
    assert "acc1_genus" in capsys.readouterr().out  # the summary table shows the rank columns


def test_the_run_summary_shows_acc1_at_each_rank():
    from entitynet import summary

    found = {"acc1": 0.25, "chance": 0.05, "images": 40, "classes": 20, "split": "test",
             "ranks": {"acc1_species": 0.25, "acc1_genus": 0.5, "acc1_family": 0.75}, "meaning": "what transfers"}
    shown = summary.lines({"run": "RUN", "stages": [], "dataset": None, "model": None, "eval_table": None,
                           "domain": "livingthings", "evaluations": {"unseen_entities": found}})
    assert "    unseen_entities at each rank: species 0.250, genus 0.500, family 0.750" in shown


def test_rank_scores_are_columns_of_the_table_and_classification_results_of_the_card():
    pytest.importorskip("torch")
    from entitynet.hub_cards.model_card import card_results
    from entitynet.training.evaluation import report

    record = {"model": "m", "task_name": "living-test", "dataset": "d", "dataset_id": "org/living", "split": "test",
              "num_images": 12,
              "metrics": {"acc1": 0.25, "acc1_species": 0.25, "acc1_genus": 0.5, "acc1_hypernym1": 0.75}}
    table = report.markdown([record])
    assert "| acc1_species | acc1_genus | acc1_hypernym1 |" in table and "| 0.5000 |" in table
    assert "acc1_family" not in table
    card = {entry["metric_name"]: entry["task_type"] for entry in card_results([record])}
    assert card == {name: "zero-shot-image-classification"
                    for name in ("acc1", "acc1_species", "acc1_genus", "acc1_hypernym1")}
