"""Converting CLIP models between open_clip's format and transformers' CLIPModel (needs the train extra)."""
