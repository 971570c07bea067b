"""The build stage (``entitynet build``): a Hugging Face dataset (EntityNet and LivingThings) from a
run directory. The package is called ``dataset``, not ``build``, because linters, formatters and
structure viewers skip folders named ``build`` as build output."""
