"""Rendering Suricata's configuration from Lateral's settings.

Lateral never edits a ``suricata.yaml`` by hand: it renders one complete file from the typed
:class:`~appliance.config.Settings`, for one run (offline replay or live capture), and has
Suricata itself validate it (``suricata -T``) before it is used. The defaults follow Suricata 7's
stock ``suricata.yaml`` wherever detection depends on them (rule variables, stream, app-layer,
decoder), so that Lateral never loses an alert stock Suricata would raise; what Lateral changes is
what it needs around the engine: the EVE stream's content, community-id, the command socket,
tunnel decoding and logging.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import (
    CaptureSettings,
    EngineSettings,
    EveSettings,
    FlowTimeoutSettings,
    Settings,
    TunnelSettings,
)
from .errors import ConfigError

__all__ = ["RenderTarget", "render_config", "to_yaml", "write_config"]

# App-layer parsers and their stock state; a user's ``engine.app_layer`` overrides these.
_STOCK_APP_LAYER: dict[str, bool | str] = {
    "telnet": True, "rfb": True, "mqtt": True, "krb5": True, "bittorrent-dht": True,
    "snmp": True, "ike": True, "tls": True, "pgsql": False, "dcerpc": True, "ftp": True,
    "rdp": True, "ssh": True, "http2": True, "smtp": True, "imap": "detection-only",
    "smb": True, "nfs": True, "tftp": True, "dns": True, "http": True, "modbus": False,
    "dnp3": False, "enip": False, "ntp": True, "quic": True, "dhcp": True, "sip": True,
}


@dataclass(frozen=True, slots=True)
class RenderTarget:
    """Where one Suricata run reads rules from and writes to."""

    log_dir: Path
    rule_files: Sequence[Path] = ()
    unix_socket: Path | None = None
    eve_filename: str = "eve.json"
    pid_file: Path | None = None
    live: bool = False  # render the AF_PACKET capture on settings.capture.interface
    extra: dict[str, Any] = field(default_factory=dict)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _eve_types(eve: EveSettings) -> list[Any]:
    alert: dict[str, Any] = {
        "tagged-packets": "yes",
        "metadata": {"app-layer": _yes(eve.alert_metadata), "flow": "yes",
                     "rule": {"metadata": "yes", "raw": "no"}},
    }
    if eve.alert_payload:
        alert.update({"payload": "yes", "payload-printable": "yes", "packet": "no"})
    types: list[Any] = [
        {"alert": alert},
        {"anomaly": {"enabled": "yes", "types": {
            "decode": _yes(eve.anomaly_decoder),
            "stream": _yes(eve.anomaly_stream),
            "applayer": _yes(eve.anomaly_applayer),
        }}},
        {"http": {"extended": _yes(eve.http_extended)}},
        {"dns": {"enabled": "yes"}},
        {"tls": {"extended": _yes(eve.tls_extended)}},
        {"files": {"force-magic": _yes(eve.files_force_magic)}},
        {"smtp": {"enabled": "yes"}},
        "ftp", "rdp", "nfs", "smb", "tftp", "ike", "dcerpc", "krb5", "bittorrent-dht",
        "snmp", "rfb", "sip",
        {"quic": {"enabled": "yes"}},
        {"dhcp": {"enabled": "yes", "extended": _yes(eve.dhcp_extended)}},
        "ssh",
        {"mqtt": {"enabled": "yes"}},
        "http2",
        {"stats": {"totals": "yes", "threads": "no", "deltas": "no"}},
    ]
    if eve.flow:
        types.append("flow")
    if eve.netflow:
        types.append("netflow")
    return types


def _eve_output(eve: EveSettings, target: RenderTarget) -> dict[str, Any]:
    return {
        "eve-log": {
            "enabled": "yes",
            "filetype": "regular",
            "filename": target.eve_filename,
            "community-id": _yes(eve.community_id),
            "community-id-seed": 0,
            "ethernet": _yes(eve.ethernet),
            "types": _eve_types(eve),
        }
    }


def _app_layer(engine: EngineSettings) -> dict[str, Any]:
    states = dict(_STOCK_APP_LAYER)
    states.update(engine.app_layer)
    protocols: dict[str, Any] = {}
    for name, state in states.items():
        enabled = state if isinstance(state, str) else _yes(state)
        protocols[name] = {"enabled": enabled}
    protocols["tls"]["detection-ports"] = {"dp": 443}
    protocols["rfb"]["detection-ports"] = {"dp": "5900, 5901, 5902, 5903, 5904, 5905, 5906, "
                                                  "5907, 5908, 5909"}
    protocols["smb"]["detection-ports"] = {"dp": "139, 445"}
    protocols["modbus"].update({"detection-ports": {"dp": 502}, "stream-depth": 0})
    protocols["dnp3"]["detection-ports"] = {"dp": 20000}
    protocols["enip"]["detection-ports"] = {"dp": 44818, "sp": 44818}
    protocols["pgsql"]["stream-depth"] = 0
    dns_state = protocols.pop("dns")["enabled"]
    protocols["dns"] = {
        "tcp": {"enabled": dns_state, "detection-ports": {"dp": 53}},
        "udp": {"enabled": dns_state, "detection-ports": {"dp": 53}},
    }
    protocols["smtp"].update({
        "raw-extraction": "no",
        "mime": {"decode-mime": "yes", "decode-base64": "yes", "decode-quoted-printable": "yes",
                 "header-value-depth": 2000, "extract-urls": "yes", "body-md5": "no"},
        "inspected-tracker": {"content-limit": 100000, "content-inspect-min-size": 32768,
                              "content-inspect-window": 4096},
    })
    protocols["http"]["libhtp"] = {
        "default-config": {
            "personality": "IDS",
            "request-body-limit": engine.http_request_body_limit,
            "response-body-limit": engine.http_response_body_limit,
            "request-body-minimal-inspect-size": "32kb",
            "request-body-inspect-window": "4kb",
            "response-body-minimal-inspect-size": "40kb",
            "response-body-inspect-window": "16kb",
            "response-body-decompress-layer-limit": 2,
            "http-body-inline": "auto",
            "swf-decompression": {"enabled": "no"},
            "double-decode-path": "no",
            "double-decode-query": "no",
        }
    }
    return {"protocols": protocols}


def _decoder(tunnels: TunnelSettings) -> dict[str, Any]:
    return {
        "teredo": {"enabled": tunnels.teredo, "ports": tunnels.teredo_ports},
        "vxlan": {"enabled": tunnels.vxlan, "ports": tunnels.vxlan_ports},
        "geneve": {"enabled": tunnels.geneve, "ports": tunnels.geneve_ports},
    }


def _flow_timeouts(t: FlowTimeoutSettings) -> dict[str, Any]:
    # Emergency timeouts (under memory pressure) never longer than the normal ones.
    base = {"new": t.new, "established": t.established, "bypassed": 100,
            "emergency-new": min(10, t.new), "emergency-established": min(100, t.established),
            "emergency-bypassed": 50}
    return {
        "default": {**base, "closed": 0, "emergency-closed": 0},
        "tcp": {"new": t.tcp_new, "established": t.tcp_established, "closed": t.tcp_closed,
                "bypassed": 100, "emergency-new": min(5, t.tcp_new),
                "emergency-established": min(100, t.tcp_established),
                "emergency-closed": min(10, t.tcp_closed), "emergency-bypassed": 50},
        "udp": dict(base),
        "icmp": dict(base),
    }


def _af_packet(capture: CaptureSettings) -> list[dict[str, Any]]:
    iface: dict[str, Any] = {
        "interface": capture.interface,
        "threads": capture.threads,
        "cluster-id": capture.cluster_id,
        "cluster-type": capture.cluster_type,
        "defrag": "yes",
        "use-mmap": "yes",
        "tpacket-v3": "yes",
        "ring-size": capture.ring_size,
        "block-size": capture.block_size,
        "checksum-checks": capture.checksum_checks,
    }
    if capture.bpf_filter:
        iface["bpf-filter"] = capture.bpf_filter
    return [iface, {"interface": "default"}]


def render_config(settings: Settings, target: RenderTarget) -> dict[str, Any]:
    """Return the complete Suricata configuration for one run, as a plain mapping."""
    engine = settings.engine
    cfg: dict[str, Any] = {
        "vars": {
            "address-groups": dict(settings.vars.address_groups),
            "port-groups": dict(settings.vars.port_groups),
        },
        "default-log-dir": str(target.log_dir),
        "stats": {"enabled": "yes", "interval": engine.stats_interval},
        "outputs": [_eve_output(settings.eve, target)],
        "logging": {
            "default-log-level": "notice",
            "outputs": [
                {"console": {"enabled": "yes"}},
                {"file": {"enabled": "yes", "level": "info", "filename": "suricata.log"}},
            ],
        },
        "pcap-file": {"checksum-checks": engine.checksum_checks},
        "app-layer": _app_layer(engine),
        "asn1-max-frames": 256,
        "host-mode": "auto",
        "unix-command": {"enabled": "no"},
        "legacy": {"uricontent": "enabled"},
        "exception-policy": "auto",
        "pcre": {"match-limit": 3500, "match-limit-recursion": 1500},
        "host-os-policy": {"windows": ["0.0.0.0/0"]},
        "defrag": {"memcap": engine.defrag_memcap, "hash-size": 65536, "trackers": 65535,
                   "max-frags": 65535, "prealloc": "yes", "timeout": 60},
        "flow": {"memcap": engine.flow_memcap, "hash-size": 65536, "prealloc": 10000,
                 "emergency-recovery": 30},
        "vlan": {"use-for-tracking": True},
        "livedev": {"use-for-tracking": True},
        "flow-timeouts": _flow_timeouts(engine.flow_timeouts),
        "stream": {
            "memcap": engine.stream_memcap,
            "checksum-validation": "yes",
            "inline": "auto",
            "reassembly": {"memcap": engine.reassembly_memcap, "depth": engine.reassembly_depth,
                           "toserver-chunk-size": 2560, "toclient-chunk-size": 2560,
                           "randomize-chunk-size": "yes"},
        },
        "host": {"hash-size": 4096, "prealloc": 1000, "memcap": engine.host_memcap},
        "decoder": _decoder(settings.tunnels),
        "detect": {
            "profile": engine.detect_profile,
            "custom-values": {"toclient-groups": 3, "toserver-groups": 25},
            "sgh-mpm-context": "auto",
            "prefilter": {"default": "mpm"},
        },
        "mpm-algo": engine.mpm_algo,
        "spm-algo": engine.spm_algo,
        "threading": {"set-cpu-affinity": "no", "detect-thread-ratio": 1.0},
        "classification-file": str(engine.classification_file),
        "reference-config-file": str(engine.reference_config_file),
        "rule-files": [str(Path(p).resolve()) for p in target.rule_files],
    }
    if engine.threshold_file is not None:
        cfg["threshold-file"] = str(engine.threshold_file)
    if target.unix_socket is not None:
        cfg["unix-command"] = {"enabled": "yes", "filename": str(target.unix_socket)}
    if target.pid_file is not None:
        cfg["pid-file"] = str(target.pid_file)
    if target.live:
        if not settings.capture.interface:
            raise ConfigError("capture.interface is not set: which NIC receives the mirror?",
                              hint="set capture.interface in the config (e.g. ens5)")
        cfg["af-packet"] = _af_packet(settings.capture)
        cfg["runmode"] = "workers"
    cfg.update(target.extra)
    return cfg


class _Dumper(yaml.SafeDumper):
    """A dumper that never emits YAML anchors/aliases (Suricata's parser does not follow them)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(cfg: dict[str, Any]) -> str:
    """Serialise a configuration mapping the way Suricata expects (``%YAML 1.1`` header)."""
    body = yaml.dump(cfg, Dumper=_Dumper, default_flow_style=False, sort_keys=False)
    return "%YAML 1.1\n---\n" + body


def write_config(settings: Settings, target: RenderTarget, path: Path) -> Path:
    """Render and write the configuration atomically to ``path``; return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(to_yaml(render_config(settings, target)), encoding="utf-8")
    os.replace(tmp, path)
    return path
