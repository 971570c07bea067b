"""The build stage: a Hugging Face dataset (EntityNet and LivingThings) from a run directory."""
