"""The enrich stage: a natural type for every entity, visual attributes for the most popular."""
