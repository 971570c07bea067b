"""The search stage: queries -> image candidates, from web engines or a local image-text pool."""
