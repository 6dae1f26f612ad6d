"""Plugging the shipper into ``lateral replay``, ``lateral ingest`` and the live appliance.

:class:`ShippingEveSink` is the EVE file sink that also hands every record it writes to an
:class:`~appliance.es.shipper.EsShipper`. It is a subclass of
:class:`~appliance.outputs.EveFileSink`, so the replay and ingest loops (typed for that sink,
using its ``sync``/``state``/``recover`` for exactly-once output) take it unchanged; ``sync``
also makes the shipper's spool durable, so a checkpoint never runs ahead of the spool.

:func:`open_shipper` builds a shipper from plain settings values, with its spool and dead-letter
file under the appliance's state directory, installing the index templates on first contact;
its shipping loop runs in a child process of its own (connection arguments, not a client), so
the pipeline's process only appends to the spool and has no thread of the shipper's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..outputs import EveFileSink, join_lines
from .shipper import EsShipper

__all__ = ["ShippingEveSink", "open_shipper"]


def open_shipper(
    url: str,
    *,
    state_dir: Path,
    namespace: str = "default",
    host: str | None = None,
    api_key: str | None = None,
    username: str | None = None,
    password: str | None = None,
    ca_file: Path | None = None,
    max_spool_bytes: int = 1 << 30,
    dead_letter_max_bytes: int = 64 << 20,
    dead_letter_keep: int = 5,
) -> EsShipper:
    """A shipper to ``url``: spool ``state_dir/es-spool``, rejects ``es-dead-letter.jsonl``."""
    return EsShipper(
        connection={"url": url, "api_key": api_key, "username": username,
                    "password": password, "ca_file": ca_file},
        spool_dir=state_dir / "es-spool", dead_letter=state_dir / "es-dead-letter.jsonl",
        namespace=namespace, host=host, max_spool_bytes=max_spool_bytes,
        dead_letter_max_bytes=dead_letter_max_bytes, dead_letter_keep=dead_letter_keep,
        install_templates=True)


class ShippingEveSink(EveFileSink):
    """Writes the EVE file and ships the same records to Elasticsearch."""

    def __init__(self, path: Path, shipper: EsShipper, *, buffer_size: int = 1 << 20) -> None:
        super().__init__(path, buffer_size=buffer_size)
        self.shipper = shipper

    def write(self, lines: Sequence[bytes]) -> None:
        if not lines:
            return
        block = join_lines(lines)   # once, for the EVE file and the spool
        super().write_block(block, len(lines))
        self.shipper.write_block(block, len(lines))

    def flush(self) -> None:
        super().flush()
        self.shipper.flush()

    def sync(self) -> None:
        super().sync()
        self.shipper.sync()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.shipper.close()
