"""Elasticsearch output: ECS documents, index set-up, and a shipper that loses nothing.

The pieces, each usable alone:

- :mod:`.ecs` (sans-I/O): an enriched EVE record → an ECS 8.x document, its data stream
  (``logs-lateral.<event_type>-<namespace>``) and its ``_id`` (``lateral.id``).
- :mod:`.templates`: the component and index templates with an explicit mapping of every field
  :mod:`.ecs` writes, the ILM policy where the cluster has ILM; :func:`setup` is idempotent.
- :mod:`.shipper`: :class:`EsShipper`, a :class:`~appliance.outputs.Sink` whose ``write`` only
  appends to a durable on-disk spool (:mod:`._spool`, writer side); a shipping loop
  (:mod:`._loop`, in a child process of its own, or in a thread when given a client) reads the
  spool, ships with bulk requests (:mod:`._bulk`), retries with backoff, sends rejects to a
  dead-letter file (:mod:`._deadletter`) and replays the spool in order after an outage.
- :mod:`._client`: the one client factory (API key, basic auth, CA file), speaking REST API
  compatibility 8 so that the 9.x Python client works with 8.x and 9.x servers.
- :mod:`.sink`: :class:`ShippingEveSink` (EVE file + shipper, for replay/ingest/run) and
  :func:`open_shipper` (a shipper from settings values, spool under the state directory).
- :mod:`.kibana`: the Kibana saved objects (data views, searches, Lens, the dashboard) as a
  packaged NDJSON generated from the templates' fields, and the saved-objects import client.
- :mod:`.cli`: ``lateral es setup``, ``lateral findings search``, ``lateral kibana setup|export``.

Errors reaching the user are :class:`~appliance.errors.SinkError` (cannot reach or set up the
cluster); the client's exceptions are converted in :mod:`.cli`. The shipper never raises into
the pipeline for the cluster's sake: an outage is a counter and a spool, not an exception.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real imports, for type checkers; at run time they load on first use
    from ._client import connect
    from .ecs import dataset, doc_id, to_ecs
    from .shipper import EsShipper, ShipperCounters
    from .sink import ShippingEveSink, open_shipper
    from .templates import SetupReport, data_stream, setup

__all__ = ["EsShipper", "SetupReport", "ShipperCounters", "ShippingEveSink", "connect",
           "data_stream", "dataset", "doc_id", "open_shipper", "setup", "to_ecs"]

# Importing the Elasticsearch client costs about half a second: every `lateral` command would pay
# it if this package loaded it eagerly (the CLI registers `es` and `findings` at start).
_WHERE = {"connect": "_client", "dataset": "ecs", "doc_id": "ecs", "to_ecs": "ecs",
          "EsShipper": "shipper", "ShipperCounters": "shipper", "ShippingEveSink": "sink",
          "open_shipper": "sink", "SetupReport": "templates", "data_stream": "templates",
          "setup": "templates"}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
