"""The ``datasets`` builder for EntityNet and LivingThings (installed as ``entitynet.builders``).

Empty until the build stage lands; the folder exists so the package layout is fixed from the start.
"""
