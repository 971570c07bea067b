"""Ready configurations shipped with the package (installed as ``entitynet.configs``).

``livingthings.yaml`` and ``entitynet.yaml`` are the presets behind ``--domain``; ``demo.yaml`` runs
offline on ``samples/kg-sample.ttl``. Read them with ``entitynet.config.preset_path``.
"""
