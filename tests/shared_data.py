"""Where the shared test data lives: the Emerging Threats Open ruleset among it.

``LATERAL_ET_OPEN`` names the ET Open directory; otherwise ``../shared/data/et-open`` next to
the checkout, else ``/work/shared/data/et-open`` (the benches look it up the same way).
"""

from __future__ import annotations

import os
from pathlib import Path

_NEXT_TO_REPO = Path(__file__).resolve().parent.parent.parent / "shared/data/et-open"
ET_OPEN = Path(os.environ.get("LATERAL_ET_OPEN") or (
    _NEXT_TO_REPO if _NEXT_TO_REPO.is_dir() else "/work/shared/data/et-open"))
