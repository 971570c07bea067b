"""The ``datasets`` builder for EntityNet and LivingThings (installed as ``entitynet.builders``):
its features, splits, configurations and citation (``entitynet.py``)."""
