"""Dataset and model card templates and their rendering (installed as ``entitynet.hub_cards``):
``dataset_card.py`` the dataset card, ``model_card.py`` the model card and its model-index,
``converted_card.py`` the card of a model converted from open_clip."""
