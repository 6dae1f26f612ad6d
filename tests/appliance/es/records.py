"""Suricata 7 EVE records (as Lateral emits them) of the types the sample capture lacks.

Field names and shapes follow Suricata 7.0's EVE output (``tls`` with extended fields and JA3,
decoder and app-layer ``anomaly``, extended ``dhcp``, ``smb``), and Lateral's own ``policy``
finding as the segmentation check writes it.
"""

from __future__ import annotations

from typing import Any

import orjson

_BASE: dict[str, Any] = {"src_ip": "10.0.0.66", "dest_ip": "10.0.0.10", "proto": "TCP",
                         "ether": {"src_mac": "52:54:00:4c:00:42",
                                   "dest_mac": "52:54:00:4c:00:0a"},
                         "community_id": "1:Bd2mUuHbJ0tXMQyIT7Y5TgyOByI="}
_VMS = {"src_vm": {"name": "dev07", "labels": {"zone": "dev"}},
        "dest_vm": {"name": "web01", "labels": {"zone": "web"}}}


def _rec(rid: str, ts: str, event_type: str, **fields: Any) -> dict[str, Any]:
    rec = {"timestamp": ts, "flow_id": 1234567890123, "event_type": event_type, **_BASE,
           **fields}
    rec["lateral"] = {"sensor": "hv01-lateral", "id": rid, **_VMS}
    return rec


RECORDS: list[dict[str, Any]] = [
    _rec("extra-tls-1", "2024-05-14T09:01:00.100000+0000", "tls", src_port=50100, dest_port=443,
         tls={"subject": "CN=web01.lab.internal", "issuerdn": "CN=Lab CA", "serial": "1A:2B",
              "fingerprint": "aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd",
              "sni": "web01.lab.internal", "version": "TLS 1.2",
              "notbefore": "2024-01-01T00:00:00", "notafter": "2025-01-01T00:00:00",
              "ja3": {"hash": "e7d705a3286e19ea42f587b344ee6865", "string": "771,4865-4866,0"},
              "ja3s": {"hash": "15af977ce25de452b96affa2addb1036", "string": "771,4865,43"}}),
    _rec("extra-anomaly-1", "2024-05-14T09:01:01.000000+0000", "anomaly", src_port=50101,
         dest_port=80, anomaly={"type": "decode", "event": "ipv4.trunc_pkt"}),
    _rec("extra-anomaly-2", "2024-05-14T09:01:01.500000+0000", "anomaly", src_port=50102,
         dest_port=80, app_proto="http", anomaly={"type": "applayer", "event":
                                                  "UNABLE_TO_MATCH_RESPONSE_TO_REQUEST",
                                                  "layer": "proto_parser", "code": 11}),
    _rec("extra-dhcp-1", "2024-05-14T09:01:02.000000+0000", "dhcp", src_port=67, dest_port=68,
         proto="UDP", dhcp={"type": "reply", "id": 1840512381, "client_mac": "52:54:00:4c:00:42",
                            "assigned_ip": "10.0.0.66", "client_ip": "0.0.0.0",
                            "relay_ip": "0.0.0.0", "next_server_ip": "0.0.0.0",
                            "dhcp_type": "ack", "lease_time": 86400, "renewal_time": 43200,
                            "rebinding_time": 75600, "subnet_mask": "255.255.255.0",
                            "routers": ["10.0.0.1"], "dns_servers": ["10.0.0.2"]}),
    _rec("extra-smb-1", "2024-05-14T09:01:03.000000+0000", "smb", src_port=50103,
         dest_port=445, smb={"id": 3, "dialect": "3.11", "command": "SMB2_COMMAND_TREE_CONNECT",
                             "status": "STATUS_SUCCESS", "status_code": "0x0",
                             "session_id": 4398046511105, "tree_id": 1,
                             "share": "\\\\web01\\IPC$", "share_type": "PIPE"}),
    _rec("extra-policy-1", "2024-05-14T09:01:04.000000+0000", "policy", src_port=50104,
         dest_port=5432, policy={"check": "segmentation", "rule_id": "dev-to-data",
                                 "rule_name": "dev must not reach data", "action": "alert",
                                 "reason": "dev07 (dev) → web01 (web) tcp/5432: matched rule",
                                 "key": "dev07|web01|tcp|5432", "count": 3,
                                 "first_seen": "2024-05-14T09:01:04.000000+0000",
                                 "last_seen": "2024-05-14T09:01:09.000000+0000"}),
]

EXTRA_RECORDS: list[bytes] = [orjson.dumps(r) for r in RECORDS]
