"""Set for every test before any test module imports huggingface_hub (it reads the variable at
import): no test reaches the hub; the models and data are built locally."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
