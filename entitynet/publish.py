"""Publish a built dataset folder to the Hugging Face Hub.

``huggingface_hub``'s resumable large-folder upload sends the folder as it is: its README.md
(the card with both configs) and ``data/**.parquet``, so the Hub repo and the local folder load
the same way. The token comes from HF_TOKEN or the saved login (``hf auth login``) and is never
printed or written; ``--dry-run`` lists what would be uploaded without any network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plan(folder: Path) -> list[tuple[str, int]]:
    """(path in the repo, bytes) of every file that would be uploaded."""
    if not (folder / "README.md").exists() or not any(folder.glob("data/*/*.parquet")):
        raise FileNotFoundError(f"{folder} is not a built dataset (README.md and data/*/*.parquet); run `entitynet build` first")
    return [(str(path.relative_to(folder)), path.stat().st_size)
            for path in sorted(folder.rglob("*")) if path.is_file() and not path.name.startswith(".")]


def push_dataset(folder: Path, repo_id: str, private: bool = False) -> dict[str, Any]:
    from huggingface_hub import HfApi

    files = plan(folder)
    api = HfApi()  # token: HF_TOKEN, else the saved login; never passed through our code
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_large_folder(repo_id=repo_id, folder_path=str(folder), repo_type="dataset", private=private,
                            ignore_patterns=[".*"])
    return {"repo": repo_id, "files": len(files), "bytes": sum(size for _, size in files)}
