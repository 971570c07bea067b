"""Dataset and model card templates and their rendering (installed as ``entitynet.hub_cards``).

Empty until the build and publish stages land.
"""
