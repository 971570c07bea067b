"""The Accelerate CLIP trainer (installed as ``entitynet.training``; needs ``entitynet[train]``).

``python -m entitynet.training.train`` (or ``accelerate launch -m entitynet.training.train``)
trains ``transformers.CLIPModel`` on an EntityNet dataset. The rest of the library never imports
this package at import time; ``entitynet demo`` imports it lazily when it is installed.
"""
