"""The model card of a converted open_clip model: where it came from and how it was converted."""

from __future__ import annotations

from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

from entitynet.rundir import package_versions

RESAMPLE = {2: "bilinear", 3: "bicubic"}


def write_converted_card(folder: Path, source: Any, converted: Any, config: Any, processor: Any,
                         own_tokenizer: bool = False) -> None:
    """``source``: the OpenClipModel read; ``converted``: its Converted result; ``config`` and
    ``processor``: the CLIPConfig and image processor written beside the card; ``own_tokenizer``: the
    model brought its own tokenizer (``text_cfg.hf_tokenizer_name``) instead of CLIP's BPE."""
    from huggingface_hub import ModelCard, ModelCardData

    card_data = ModelCardData(
        library_name="transformers", pipeline_tag="zero-shot-image-classification",
        tags=["clip", "open_clip", "converted"], base_model=source.hub_id,
    )
    vision, text = config.vision_config, config.text_config
    template = Path(str(resources.files("entitynet.hub_cards") / "converted_model_card.md"))
    card = ModelCard.from_template(
        card_data, template_path=str(template), model_name=f"{source.name} (transformers CLIPModel)",
        hub_id=source.hub_id, revision=source.revision, source=source.name, folder=converted.folder.name,
        image_size=vision.image_size, patch_size=vision.patch_size, vision_layers=vision.num_hidden_layers,
        vision_width=vision.hidden_size, text_layers=text.num_hidden_layers, text_width=text.hidden_size,
        embed_dim=config.projection_dim, activation=converted.activation, context_length=converted.context_length,
        resample=RESAMPLE.get(int(processor.resample), str(processor.resample)), crop=processor.do_center_crop,
        mean=[round(m, 4) for m in processor.image_mean], std=[round(s, 4) for s in processor.image_std],
        own_tokenizer=own_tokenizer, vocab_size=text.vocab_size, eos_token_id=text.eos_token_id,
        max_abs_diff=converted.max_abs_diff, built_on=date.today().isoformat(),
        versions=package_versions(("entitynet", "torch", "transformers")),
    )
    card.save(folder / "README.md")
