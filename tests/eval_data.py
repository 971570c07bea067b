"""Evaluation stand-ins made from the real camera-trap photos (../shared/realdata): the same
images laid out as an image folder, a Hugging Face dataset (parquet, ClassLabel) and
CLIP_benchmark webdataset shards, and a tiny randomly initialised CLIPModel saved with its
tokenizer and image processor (no Hub)."""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path

TEMPLATES = ("a camera trap photo of a {c}.", "{c} at night")


def label_of(photo: Path) -> str:
    """'african_elephants_bw.jpg' -> 'african elephants'; 'blank2.jpg' -> 'blank'."""
    stem = re.sub(r"_(bw|cmyk|with_exif_orientation|truncated_file)$", "", photo.stem)
    return stem.rstrip("0123456789").replace("_", " ")


def captions_of(photo: Path) -> list[str]:
    label = label_of(photo)
    return [f"a camera trap picture of {label}", f"{label} in the photo {photo.stem.replace('_', ' ')}"]


def ordered(photos: Sequence[Path]) -> list[Path]:
    """Image-folder order: by class, then by file name; every layout below keeps it."""
    return sorted(photos, key=lambda p: (label_of(p), p.name))


def class_names(photos: Sequence[Path]) -> list[str]:
    return sorted({label_of(p) for p in photos})


def image_folder(photos: Sequence[Path], root: Path) -> Path:
    for photo in photos:
        folder = root / label_of(photo).replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, folder / photo.name)
    return root


def hf_dataset(photos: Sequence[Path], root: Path, split: str = "test") -> Path:
    import datasets

    names = class_names(photos)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names),
                                  "captions": datasets.Sequence(datasets.Value("string"))})
    rows = {"image": [{"bytes": p.read_bytes(), "path": p.name} for p in ordered(photos)],
            "label": [names.index(label_of(p)) for p in ordered(photos)],
            "captions": [captions_of(p) for p in ordered(photos)]}
    (root / "data").mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return root


def webdataset(photos: Sequence[Path], root: Path, retrieval: bool = False, shards: int = 2,
               templates: Sequence[str] = TEMPLATES) -> Path:
    names = class_names(photos)
    (root / "test").mkdir(parents=True, exist_ok=True)
    photos = ordered(photos)
    per_shard = -(-len(photos) // shards)
    for shard in range(shards):
        with tarfile.open(root / "test" / f"{shard}.tar", "w") as tar:
            for n, photo in enumerate(photos[shard * per_shard:(shard + 1) * per_shard], start=shard * per_shard):
                key = f"s{n:07d}"
                _add(tar, f"{key}.jpg", photo.read_bytes())
                if retrieval:
                    _add(tar, f"{key}.txt", "\n".join(captions_of(photo)).encode())
                else:
                    _add(tar, f"{key}.cls", str(names.index(label_of(photo))).encode())
    (root / "test" / "nshards.txt").write_text(f"{shards}\n")
    if retrieval:
        (root / "dataset_type.txt").write_text("retrieval\n")
    else:
        (root / "classnames.txt").write_text("\n".join(names) + "\n")
        (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    return root


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def tiny_clip(folder: Path, words: Sequence[str], seed: int = 0) -> Path:
    """A randomly initialised CLIPModel (64 px, 2 layers) with a byte-level BPE tokenizer trained on
    ``words`` and a CLIP image processor, saved as transformers loads it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    special = ["<pad>", "<unk>", "<start>", "<end>"]  # end is id 3: CLIP pools at the first end token
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(list(words), trainers.BpeTrainer(vocab_size=400, special_tokens=special, show_progress=False,
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.TemplateProcessing(single="<start> $A <end>", special_tokens=[("<start>", 2), ("<end>", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<start>", eos_token="<end>", pad_token="<pad>",
                                        unk_token="<unk>", model_max_length=32)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "intermediate_size": 128, "max_position_embeddings": 32, "bos_token_id": 2, "eos_token_id": 3,
                     "pad_token_id": 0},
        vision_config={"image_size": 64, "patch_size": 16, "hidden_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "intermediate_size": 128},
        projection_dim=32))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())
