"""The build stage (``entitynet build``): a Hugging Face dataset (EntityNet and LivingThings) from a
run directory."""
