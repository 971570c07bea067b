"""The trainer's configuration schema and loader, under the trainer's own name.

They live in ``entitynet.train_config``, which the run's configuration (``train:`` of ``entitynet
run``) reads without importing this package (nor torch); the trainer's modules import them from here.
"""

from entitynet.train_config import *  # noqa: F403
from entitynet.train_config import __all__  # noqa: F401
