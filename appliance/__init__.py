"""Lateral's appliance: everything around Suricata that makes it an inter-VM sensor.

Data flow::

    Suricata ─EVE JSON─▶ eve.reader (durable offset) ─▶ pipeline: parse → enrich (VM identity)
        → policy checks → findings (stable ids) ─▶ outputs (EVE file; Elasticsearch later)

Modules:

- ``config``: the one typed settings object (YAML + environment).
- ``render`` / ``validate``: Suricata's configuration rendered from the settings and checked by
  Suricata itself (``suricata -T``).
- ``engine``: finding Suricata, supervising it, its unix-socket command channel.
- ``enginelog``: Suricata's console messages and rule failures, parsed.
- ``eve``: the EVE stream reader and its checkpoint.
- ``pipeline``, ``enrich``, ``policy``, ``findings``: the sans-I/O stages.
- ``outputs``: sinks (the local EVE file is the embedded default).
- ``replay`` / ``ingest``: offline captures and existing EVE streams through the pipeline.
- ``summary``: what a human sees after a replay.
- ``cli``: the ``lateral`` command.
"""

__version__ = "0.1.0"
