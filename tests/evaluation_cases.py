"""Evaluation cases that need two processes, run by tests/test_evaluation_suite.py in a fresh
interpreter under accelerate's debug_launcher (two forked CPU processes, gloo).

    python tests/evaluation_cases.py built MODEL DATASET OUT.json
    python tests/evaluation_cases.py skipping MODEL FOLDER OUT.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import datasets
from accelerate import Accelerator, debug_launcher

from entitynet.training.evaluation import evaluate_built_dataset, load_model


def built_case(model: str, dataset: str, out: str) -> None:
    """Each process embeds every other image; every process gets the whole result."""
    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == 2
    clip = load_model(model)
    rows = datasets.load_dataset(dataset, "entitynet", split="train")
    metrics = evaluate_built_dataset(clip.model, clip.tokenizer, clip.processor, rows, accelerator=accelerator,
                                     batch_size=5)
    Path(f"{out}.{accelerator.process_index}").write_text(json.dumps(metrics))


def skipping_case(model: str, folder: str, out: str) -> None:
    """Unreadable images left out by whichever process meets them; every process gets them all."""
    from entitynet.training.evaluation.features import embed_images
    from entitynet.training.evaluation.inputs import DataSpec, open_input

    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == 2
    clip = load_model(model)
    features = embed_images(clip.model, clip.processor, open_input(DataSpec(folder)).read(), accelerator,
                            batch_size=3, progress=False, skip_unreadable=True)
    Path(f"{out}.{accelerator.process_index}").write_text(json.dumps(
        {"embeddings": features.embeddings.tolist(), "labels": features.labels, "skipped": features.skipped}))


if __name__ == "__main__":
    case, args = sys.argv[1], sys.argv[2:]
    function = {"built": built_case, "skipping": skipping_case}[case]
    debug_launcher(lambda: function(*args), num_processes=2)
