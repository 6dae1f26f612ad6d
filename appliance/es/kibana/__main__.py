"""``python -m appliance.es.kibana``: regenerate the packaged ``lateral.ndjson``."""

from __future__ import annotations

from pathlib import Path

from . import FILENAME, generate

if __name__ == "__main__":
    target = Path(__file__).with_name(FILENAME)
    target.write_bytes(generate())
