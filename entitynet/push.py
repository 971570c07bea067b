"""Publish a built dataset folder or a trained model folder to the Hugging Face Hub.

``huggingface_hub``'s resumable large-folder upload sends the folder as it is: for a dataset its
README.md (the card with both configs) and ``data/**.parquet``, so the Hub repo and the local
folder load the same way; for a model what ``save_pretrained`` wrote, the card and the eval
results. A pushed dataset folder records its Hub id (``.hub-id.json``, not uploaded), and a model
whose dataset was pushed first names it in its card. The token comes from HF_TOKEN or the saved login (``hf auth login``) and is never
printed or written; ``--dry-run`` lists what would be uploaded without any network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from entitynet import layout
from entitynet.rundir import Context, StageError

if TYPE_CHECKING:
    from entitynet.config import Config

Kind = Literal["dataset", "model"]
REQUIRED = {
    "dataset": (["README.md", "data/*/*.parquet"], "a built dataset", "run `entitynet build` first"),
    "model": (["README.md", "config.json", "*.safetensors"], "a trained model",
              "the trainer writes one to OUTPUT/model (python -m entitynet.training.train)"),
}


def plan(folder: Path, kind: Kind = "dataset") -> list[tuple[str, int]]:
    """(path in the repo, bytes) of every file that would be uploaded."""
    patterns, what, hint = REQUIRED[kind]
    if not all(any(folder.glob(pattern)) for pattern in patterns):
        raise FileNotFoundError(f"{folder} is not {what} ({', '.join(patterns)}); {hint}")
    return [(str(path.relative_to(folder)), path.stat().st_size)
            for path in sorted(folder.rglob("*")) if path.is_file() and not path.name.startswith(".")]


def hub_url(repo_id: str, kind: Kind) -> str:
    return f"https://huggingface.co/{'datasets/' if kind == 'dataset' else ''}{repo_id}"


def push(folder: Path, repo_id: str, kind: Kind = "dataset", private: bool = False,
         dataset: Path | None = None) -> dict[str, Any]:
    """Upload ``folder``. A dataset folder then records ``repo_id`` as its Hub id; a model folder's
    card first links the dataset it was trained on (``dataset``, else the folder its
    training_config.json names) when that was pushed: ``datasets:`` and its results' dataset id."""
    from huggingface_hub import HfApi

    from entitynet.hub_cards.model_card import link_dataset, record_id, trained_on

    plan(folder, kind)
    linked = None
    if kind == "model":
        source = dataset or trained_on(folder)
        linked = link_dataset(folder, source) if source is not None else None
    files = plan(folder, kind)
    api = HfApi()  # token: HF_TOKEN, else the saved login; never passed through our code
    api.create_repo(repo_id, repo_type=kind, private=private, exist_ok=True)
    api.upload_large_folder(repo_id=repo_id, folder_path=str(folder), repo_type=kind, private=private,
                            ignore_patterns=[".*"])
    if kind == "dataset":
        record_id(folder, repo_id, pushed=True)
    return {"repo": repo_id, "files": len(files), "bytes": sum(size for _, size in files), "dataset": linked}


class PushFailed(StageError):
    """The Hub refused or could not be reached; the message never holds the token."""


def redacted(error: Exception) -> str:
    """One line about ``error`` with any token from the environment masked."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    for secret in filter(None, [os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")]):
        message = message.replace(secret, "***")
    return f"{type(error).__name__}: {message}"


def settings(config: Config, context: Context) -> dict[str, Any]:
    return {"push": config.push}


def make(config: Config, context: Context) -> dict[str, Any]:
    """`entitynet run`'s push stage: the dataset and/or the model to the repositories ``push`` names."""
    targets = [(context.path(layout.DATASET), config.push.dataset_repo, "dataset"),
               (context.path(layout.MODEL), config.push.model_repo, "model")]
    pushed = []
    for folder, repo, kind in targets:
        if not repo:
            continue
        try:
            result = push(folder, repo, kind, config.push.private,  # type: ignore[arg-type]
                          dataset=context.path(layout.DATASET))
        except Exception as error:  # huggingface_hub raises many kinds; none may carry the token out
            raise PushFailed(f"push {kind} to {repo}: {redacted(error)}") from None
        pushed.append({**result, "url": hub_url(repo, kind)})  # type: ignore[arg-type]
    return {"pushed": pushed}


def summary(stats: dict[str, Any]) -> str:
    return "\n".join(f"  {item['files']} files ({item['bytes']:,} bytes) -> {item['url']}" for item in stats.get("pushed", []))
