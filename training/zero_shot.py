"""Zero-shot classification and retrieval on a held-out split.

Classes are the split's entities, each written with a prompt template; an image is classified
correctly when the top class is one of its own entities. Entities are split so the held-out
ones never appear in training: this measures transfer to unseen entities. Retrieval pairs each
image with its first alt text and reports recall@1/5 both ways.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


@torch.no_grad()
def embed_texts(model: Any, tokenizer: Any, texts: list[str], max_length: int, device: Any, batch: int = 256) -> torch.Tensor:
    out = []
    for start in range(0, len(texts), batch):
        tokens = tokenizer(texts[start:start + batch], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        features = model.get_text_features(input_ids=tokens["input_ids"].to(device),
                                           attention_mask=tokens["attention_mask"].to(device))
        out.append(F.normalize(_tensor(features).float(), dim=-1))
    return torch.cat(out)


@torch.no_grad()
def embed_images(model: Any, processor: Any, images: list[Any], device: Any, batch: int = 128) -> torch.Tensor:
    out = []
    for start in range(0, len(images), batch):
        pixels = processor(images=[image.convert("RGB") for image in images[start:start + batch]], return_tensors="pt")["pixel_values"]
        features = model.get_image_features(pixel_values=pixels.to(device, dtype=next(model.parameters()).dtype))
        out.append(F.normalize(_tensor(features).float(), dim=-1))
    return torch.cat(out)


def _tensor(features: Any) -> torch.Tensor:
    # transformers 5 returns an output object with pooler_output, 4.x a tensor
    return features if isinstance(features, torch.Tensor) else features.pooler_output


def recall_at(similarity: torch.Tensor, k: int) -> float:
    """Share of rows whose own column (the diagonal) is among their k best."""
    top = similarity.topk(min(k, similarity.shape[1]), dim=1).indices
    return (top == torch.arange(len(similarity)).unsqueeze(1)).any(dim=1).float().mean().item()


def evaluate(model: Any, tokenizer: Any, processor: Any, rows: list[dict[str, Any]], template: str,
             max_length: int, device: Any) -> dict[str, float]:
    """Metrics over ``rows`` (dataset rows with images decoded)."""
    if not rows:
        return {}
    was_training = model.training
    model.eval()
    classes: dict[str, str] = {}
    for row in rows:
        for entity in row["entities"]:
            classes.setdefault(entity["id"], template.format(name=entity["name"], natural_type=entity.get("natural_type") or "thing"))
    ids = sorted(classes)
    images = embed_images(model, processor, [row["image"] for row in rows], device)
    prompts = embed_texts(model, tokenizer, [classes[i] for i in ids], max_length, device)
    ranked = (images @ prompts.t()).topk(min(5, len(ids)), dim=1).indices.tolist()
    index = {entity_id: n for n, entity_id in enumerate(ids)}
    own = [{index[e["id"]] for e in row["entities"]} for row in rows]
    metrics = {
        "zero_shot_top1": sum(r[0] in o for r, o in zip(ranked, own)) / len(rows),
        "zero_shot_top5": sum(bool(set(r) & o) for r, o in zip(ranked, own)) / len(rows),
        "zero_shot_classes": float(len(ids)),
    }
    paired = [n for n, row in enumerate(rows) if row["alt_texts"]]
    if len(paired) >= 2:
        texts = embed_texts(model, tokenizer, [rows[n]["alt_texts"][0] for n in paired], max_length, device)
        similarity = images[paired] @ texts.t()
        metrics |= {"image_to_text_r1": recall_at(similarity, 1), "image_to_text_r5": recall_at(similarity, 5),
                    "text_to_image_r1": recall_at(similarity.t(), 1), "text_to_image_r5": recall_at(similarity.t(), 5)}
    model.train(was_training)
    return metrics
