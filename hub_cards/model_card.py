"""The model card: ``huggingface_hub.ModelCard.from_template`` with ``ModelCardData`` whose
``eval_results`` become the ``model-index`` the Hub shows as a results widget."""

from __future__ import annotations

from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

from entitynet.builders.entitynet import CITATION
from entitynet.dataset.lineage import RANK_METRICS
from entitynet.rundir import package_versions

# CLIP_benchmark's names, as entitynet eval writes them
CLASSIFICATION = ("acc1", "acc5", "mean_per_class_recall", *RANK_METRICS)  # acc1_genus, ...: dataset/lineage.py
RETRIEVAL = tuple(f"{kind}_retrieval_recall@{k}" for kind in ("image", "text") for k in (1, 5, 10))


def write_model_card(folder: Path, config: Any, metrics: dict[str, float], history: list[dict[str, float]]) -> None:
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    dataset = config.dataset
    on_hub = not Path(dataset).exists()
    # a local dataset is named by its card's pretty name: local paths stay out of the card
    shown = dataset if on_hub else _pretty_name(Path(dataset))
    model_name = f"EntityNet CLIP on {shown}"
    results = [
        EvalResult(task_type="zero-shot-image-classification" if name in CLASSIFICATION else "zero-shot-image-text-retrieval",
                   dataset_type=shown, dataset_name=shown, dataset_config=config.dataset_config,
                   dataset_split=config.eval.split, metric_type="accuracy" if name.startswith("acc") else "recall",
                   metric_name=name, metric_value=round(float(value), 4))
        for name, value in metrics.items() if name in CLASSIFICATION + RETRIEVAL and isinstance(value, (int, float))
    ]
    card_data = ModelCardData(
        model_name=model_name, library_name="transformers", pipeline_tag="zero-shot-image-classification",
        license="other", license_name="various-source-licenses", tags=["clip", "entitynet", "knowledge-graph"],
        datasets=[dataset] if on_hub else None, eval_results=results or None,
        base_model=config.model.init_from if config.model.init_from and not Path(config.model.init_from).exists() else None,
    )
    template = Path(str(resources.files("entitynet.hub_cards") / "model_card.md"))
    synthetic = (Path(dataset).parent / "demo.json").exists()  # RUN/dataset of a demo run
    card = ModelCard.from_template(
        card_data, template_path=str(template), model_name=model_name, repo_id=config.repo_id, dataset=shown,
        dataset_config=config.dataset_config, synthetic=synthetic,
        architecture=config.model.preset if not config.model.init_from else f"finetuned from {config.model.init_from}",
        start="from scratch" if not config.model.init_from else f"finetuned from `{config.model.init_from}`",
        steps=config.max_steps, batch_size=config.batch_size, accumulation_steps=config.accumulation_steps,
        optimizer=config.optimizer, text=config.text, augment=config.augment,
        context_length=config.model.context_length,
        history=history[-10:], versions=package_versions(("entitynet", "datasets", "torch", "transformers", "accelerate")),
        built_on=date.today().isoformat(), metrics=metrics, eval_split=config.eval.split,
        eval_template=config.eval.template, citation=CITATION.strip(),
    )
    card.save(folder / "README.md")


def _pretty_name(folder: Path) -> str:
    from huggingface_hub import DatasetCard

    try:
        return DatasetCard.load(folder / "README.md").data.pretty_name or folder.resolve().parent.name
    except (OSError, ValueError):
        return folder.resolve().parent.name


def add_eval_results(folder: Path, results: list[dict[str, Any]]) -> int:
    """Merge evaluation results into ``folder/README.md``'s ``model-index`` (the card is created if
    missing). Each result holds ``EvalResult`` fields; an existing entry for the same task type,
    dataset, split and metric is replaced, every other entry and the card's text are kept.
    Returns the number of results in the model-index afterwards."""
    from huggingface_hub import EvalResult, ModelCard

    path = folder / "README.md"
    card = ModelCard.load(path) if path.is_file() else ModelCard(f"# {folder.resolve().name}\n")
    fresh = [EvalResult(**result) for result in results]

    def key(result: Any) -> tuple:
        return (result.task_type, result.dataset_type, result.dataset_name, result.dataset_config, result.dataset_split,
                result.metric_name)

    replaced = {key(result) for result in fresh}
    kept = [result for result in card.data.eval_results or [] if key(result) not in replaced]
    card.data.model_name = card.data.model_name or folder.resolve().name
    card.data.eval_results = kept + fresh
    card.save(path)
    return len(card.data.eval_results)
