"""The Accelerate CLIP trainer (installed as ``entitynet.training``; needs ``entitynet[train]``).

The library never imports this package. Empty until the training stage lands.
"""
