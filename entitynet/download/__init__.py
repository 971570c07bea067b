"""The download stage: fetch, validate, resize and deduplicate candidate images into shards."""
