"""Converting CLIP models between open_clip's format and transformers' CLIPModel.

- ``convert_open_clip(source, out, model_name=None)``: an open_clip model (``hf-hub:ORG/NAME`` or
  ``ORG/NAME``, a folder in open_clip's Hub layout, or a training checkpoint ``epoch_N.pt`` with its
  architecture named) as a folder that ``CLIPModel.from_pretrained``, ``CLIPProcessor`` and
  ``pipeline("zero-shot-image-classification")`` load; ``entitynet convert open-clip``.
- ``convert_to_open_clip(model_dir, out)``: back to open_clip's layout; ``entitynet convert to-open-clip``.
- ``load_clip(source)``: any CLIP source as (CLIPModel, tokenizer, image processor), open_clip
  sources converted once into a cache.
- ``clip_tokenizer(context_length)``: CLIP's BPE with open_clip's ids.

Needs the train extra (torch, transformers, accelerate).
"""

from entitynet.training.convert.clip_tokenizer import clip_tokenizer
from entitynet.training.convert.convert import Converted, convert_open_clip, convert_to_open_clip
from entitynet.training.convert.errors import ConversionError
from entitynet.training.convert.load import load_clip, resolve_transformers_model

__all__ = ["ConversionError", "Converted", "clip_tokenizer", "convert_open_clip", "convert_to_open_clip", "load_clip", "resolve_transformers_model"]
