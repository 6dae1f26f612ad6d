"""One typed settings object for the whole appliance.

Loaded once, from a YAML file and then the environment (``LATERAL_`` prefix, ``__`` between
nested names: ``LATERAL_ENGINE__THREADS=4``), validated, and passed down as plain values. Nothing
else in Lateral reads the environment or a config file.

The defaults are the embedded default: no Elasticsearch, local EVE output, Suricata's stock rule
variables, so that a replay without ``--config`` detects exactly what stock Suricata detects.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import ConfigError

__all__ = [
    "STOCK_ADDRESS_GROUPS",
    "STOCK_PORT_GROUPS",
    "CaptureSettings",
    "EngineSettings",
    "EsSettings",
    "OutputSettings",
    "EveSettings",
    "MirrorHealthSettings",
    "Settings",
    "VmIdentity",
    "load_settings",
]

# Suricata 7's stock suricata.yaml rule variables: rules behave as on a stock sensor.
STOCK_ADDRESS_GROUPS: dict[str, str] = {
    "HOME_NET": "[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]",
    "EXTERNAL_NET": "!$HOME_NET",
    "HTTP_SERVERS": "$HOME_NET",
    "SMTP_SERVERS": "$HOME_NET",
    "SQL_SERVERS": "$HOME_NET",
    "DNS_SERVERS": "$HOME_NET",
    "TELNET_SERVERS": "$HOME_NET",
    "AIM_SERVERS": "$EXTERNAL_NET",
    "DC_SERVERS": "$HOME_NET",
    "DNP3_SERVER": "$HOME_NET",
    "DNP3_CLIENT": "$HOME_NET",
    "MODBUS_CLIENT": "$HOME_NET",
    "MODBUS_SERVER": "$HOME_NET",
    "ENIP_CLIENT": "$HOME_NET",
    "ENIP_SERVER": "$HOME_NET",
}
STOCK_PORT_GROUPS: dict[str, str] = {
    "HTTP_PORTS": "80",
    "SHELLCODE_PORTS": "!80",
    "ORACLE_PORTS": "1521",
    "SSH_PORTS": "22",
    "DNP3_PORTS": "20000",
    "MODBUS_PORTS": "502",
    "FILE_DATA_PORTS": "[$HTTP_PORTS,110,143]",
    "FTP_PORTS": "21",
    "GENEVE_PORTS": "6081",
    "VXLAN_PORTS": "4789",
    "TEREDO_PORTS": "3544",
}

_VAR_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_SIZE = re.compile(r"^\d+(\.\d+)?\s*(b|kb|mb|gb)?$", re.IGNORECASE)

Size = Annotated[str, Field(pattern=_SIZE.pattern)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleVars(_Model):
    """Suricata's address and port groups; unset names keep their stock values."""

    address_groups: dict[str, str] = Field(default_factory=lambda: dict(STOCK_ADDRESS_GROUPS))
    port_groups: dict[str, str] = Field(default_factory=lambda: dict(STOCK_PORT_GROUPS))

    @field_validator("address_groups", "port_groups", mode="before")
    @classmethod
    def _merge_with_stock(cls, value: Any, info: Any) -> Any:
        if not isinstance(value, dict):
            return value
        stock = STOCK_ADDRESS_GROUPS if info.field_name == "address_groups" else STOCK_PORT_GROUPS
        merged = dict(stock)
        merged.update({str(k): str(v) for k, v in value.items()})
        for name in merged:
            if not _VAR_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid rule variable name (A-Z, 0-9, _)")
        return merged


class VmIdentity(_Model):
    """A guest known to the appliance: from the config file now, from OVSDB when attached."""

    name: str
    uuid: str | None = None
    iface_id: str | None = None
    host: str | None = None
    macs: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("macs", mode="before")
    @classmethod
    def _macs(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        out = []
        for mac in value or ():
            norm = str(mac).strip().lower().replace("-", ":")
            if not _MAC.match(norm):
                raise ValueError(f"{mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
            out.append(norm)
        return tuple(out)

    @field_validator("ips", mode="before")
    @classmethod
    def _ips(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        out = []
        for ip in value or ():
            try:
                out.append(str(ipaddress.ip_address(str(ip).strip())))
            except ValueError as exc:
                raise ValueError(f"{ip!r} is not an IP address") from exc
        return tuple(out)


class EveSettings(_Model):
    """What Suricata logs to its EVE stream."""

    community_id: bool = True
    ethernet: bool = True
    alert_payload: bool = False
    alert_metadata: bool = True
    http_extended: bool = True
    tls_extended: bool = True
    dhcp_extended: bool = True
    flow: bool = True
    netflow: bool = False
    anomaly_decoder: bool = True
    anomaly_applayer: bool = True
    anomaly_stream: bool = False
    files_force_magic: bool = False


class TunnelSettings(_Model):
    """Decoding of encapsulations that carry mirrored or overlay traffic."""

    vxlan: bool = True
    vxlan_ports: str = "$VXLAN_PORTS"
    geneve: bool = True
    geneve_ports: str = "$GENEVE_PORTS"
    teredo: bool = True
    teredo_ports: str = "$TEREDO_PORTS"


class FlowTimeoutSettings(_Model):
    """Seconds Suricata keeps an idle flow before it ends and its ``flow`` record is written
    (``engine.flow_timeouts``; Suricata's ``flow-timeouts``). ``tcp_*`` for TCP, the others for
    UDP, ICMP and the rest. Mirror health judges a window only after the flows in it are
    reported, so its ``settle`` must exceed the longest timeout a short flow meets (TCP
    ``closed``, or ``new`` for one-packet flows)."""

    new: int = Field(default=30, ge=1, le=86400)
    established: int = Field(default=300, ge=1, le=86400)
    tcp_new: int = Field(default=60, ge=1, le=86400)
    tcp_established: int = Field(default=600, ge=1, le=86400)
    tcp_closed: int = Field(default=60, ge=0, le=86400)


class EngineSettings(_Model):
    """How Suricata is found and run."""

    suricata: str = "suricata"
    suricata_update: str = "suricata-update"
    classification_file: Path = Path("/etc/suricata/classification.config")
    reference_config_file: Path = Path("/etc/suricata/reference.config")
    threshold_file: Path | None = None
    mpm_algo: Literal["auto", "hs", "ac", "ac-ks", "ac-bs"] = "auto"
    spm_algo: Literal["auto", "hs", "bm"] = "auto"
    detect_profile: Literal["low", "medium", "high", "custom"] = "medium"
    threads: int | None = Field(default=None, ge=1, le=256)
    checksum_checks: Literal["auto", "yes", "no"] = "auto"
    stream_memcap: Size = "64mb"
    reassembly_memcap: Size = "256mb"
    reassembly_depth: Size = "1mb"
    flow_memcap: Size = "128mb"
    defrag_memcap: Size = "32mb"
    host_memcap: Size = "32mb"
    http_request_body_limit: Size = "100kb"
    http_response_body_limit: Size = "100kb"
    stats_interval: int = Field(default=8, ge=1, le=3600)
    startup_timeout: float = Field(default=300.0, gt=0)
    socket_timeout: float = Field(default=30.0, gt=0)
    app_layer: dict[str, bool | Literal["detection-only"]] = Field(default_factory=dict)
    flow_timeouts: FlowTimeoutSettings = Field(default_factory=FlowTimeoutSettings)


class MirrorHealthSettings(_Model):
    """Is the mirror delivering each VM's traffic? (``capture.mirror_health``)

    Every ``interval`` seconds the switch's per-port counters (OVSDB ``Interface.statistics``)
    are compared with the packets Suricata's flow records attribute to the same VM, plus the
    frames no flow gives to it (broadcasts and multicasts credited to every VM they flood to,
    ARP), which a small sniffer counts on the capture NIC when ``l2_frames`` is on. A flow is
    reported when it ends and times out, so a window is judged only ``settle`` seconds after it
    closed, on the sum of its last ``span`` windows, the engine's side widened by ``tolerance``
    seconds each way (OVS refreshes its counters every 5 s); a direction is judged only when the
    switch counted ``min_packets`` in it. A direction seen below ``stopped_ratio`` is missing:
    all missing is *stopped*, one missing while another is seen at ``partial_ratio`` or more is
    *partial* (see :mod:`capture.mirror_health`).
    """

    enabled: bool | None = None  # default: when OVSDB is configured or the local one exists
    # The bridges whose VM ports the mirror is meant to cover (default: every bridge's).
    bridges: tuple[str, ...] = ()
    interval: float = Field(default=10.0, gt=0, le=3600)
    settle: float = Field(default=75.0, ge=0, le=3600)
    span: int = Field(default=3, ge=1, le=1000)
    switch_lag: float = Field(default=2.5, ge=0, le=600)
    # Seconds the engine's side is widened by on each side (OVS counters lag by up to ~5 s).
    tolerance: float = Field(default=5.0, ge=0, le=600)
    # Count broadcasts, multicasts and ARP on the capture NIC (they are in no VM's flows).
    l2_frames: bool = True
    min_packets: int = Field(default=50, ge=1)
    partial_ratio: float = Field(default=0.5, gt=0, le=1)
    stopped_ratio: float = Field(default=0.05, ge=0, lt=1)
    raise_after: int = Field(default=2, ge=1, le=1000)
    clear_after: int = Field(default=3, ge=1, le=1000)

    @model_validator(mode="after")
    def _ratios(self) -> MirrorHealthSettings:
        if self.stopped_ratio >= self.partial_ratio:
            raise ValueError("stopped_ratio must be below partial_ratio")
        return self


class CaptureSettings(_Model):
    """The live capture: Suricata's AF_PACKET on the capture NIC."""

    interface: str | None = None
    threads: int | Literal["auto"] = "auto"
    cluster_id: int = Field(default=99, ge=0, le=65535)
    cluster_type: Literal["cluster_flow", "cluster_qm", "cluster_cpu", "cluster_ebpf"] = (
        "cluster_flow"
    )
    ring_size: int = Field(default=2048, ge=64)
    block_size: int = Field(default=131072, ge=4096)  # >= a 64 KiB reassembled IP packet
    bpf_filter: str | None = None
    # Mirrored traffic often carries checksums the sender's NIC never filled in (TX offload).
    checksum_checks: Literal["kernel", "yes", "no", "auto"] = "no"
    mtu: int | None = Field(default=None, ge=68, le=65535)
    promisc: bool = True
    # Where VM identity comes from besides the config: the switch's OVSDB (unix:/path, tcp:…,
    # ssl:…); default: the local socket when it exists.
    ovsdb: str | None = None
    # For an ssl: ovsdb: the CA that signed the switch's certificate, and Lateral's own
    # certificate and private key (ovsdb-server checks them against its CA).
    ovsdb_ca_cert: Path | None = None
    ovsdb_cert: Path | None = None
    ovsdb_private_key: Path | None = None
    # Seconds between re-reads of the switch's VM inventory while running (new or moved VMs
    # named without a restart); 0 = only at start.
    inventory_refresh: float = Field(default=30.0, ge=0)
    disable_offloads: bool = True
    mirror_health: MirrorHealthSettings = Field(default_factory=MirrorHealthSettings)


class OutputSettings(_Model):
    """Where findings go: the local EVE file is the embedded default."""

    eve: Path | None = None  # default: <state_dir>/eve.json
    stats_every: float = Field(default=10.0, gt=0)


class EsSettings(_Model):
    """Shipping to Elasticsearch (off unless url is set)."""

    url: str | None = None
    namespace: str = Field(default="default", pattern=r"^[a-z0-9_]+$")
    api_key: str | None = None
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    max_spool_bytes: int = Field(default=1 << 30, ge=1 << 20)
    drain_timeout: float = Field(default=60.0, ge=0)
    # the dead-letter file rotates at this size, keeping this many old files
    dead_letter_max_bytes: int = Field(default=64 << 20, ge=1 << 12)
    dead_letter_keep: int = Field(default=5, ge=1)


InvalidPolicy = Literal["drop-invalid", "refuse"]


class RulesSettings(BaseModel):  # the ruleset lifecycle (rules/)
    """How Lateral manages its rulesets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: Path | None = Field(
        default=None, description="rules state directory (default: <state_dir>/rules)")
    keep_versions: int = Field(default=5, ge=1, le=1000,
                               description="ruleset versions kept for rollback")
    invalid_policy: InvalidPolicy = Field(
        default="drop-invalid",
        description="rules Suricata rejects: drop just them (drop-invalid) or refuse the update")
    bundled_rules: bool = Field(
        default=True, description="include Lateral's demo rules (the default canaries need them)")
    canaries: tuple[str, ...] = Field(
        default=("sample", "tcp_split"),
        description="lab scenarios replayed as canaries; add <state>/canaries/*.pcap for more")
    dist_rules: bool = Field(
        default=False, description="also include Suricata's own *-events.rules, as stock "
        "suricata-update does")
    offline: bool = Field(default=False, description="never fetch; use each source's last copy")
    unix_socket: Path | None = Field(
        default=None, description="a running Suricata's command socket to reload after updates")
    reload_timeout: float = Field(default=300.0, gt=0)
    lock_timeout: float | None = Field(
        default=None, description="seconds to wait for another update (default: wait)")
    max_shrink: float = Field(
        default=0.2, ge=0, le=1,
        description="refuse an update whose candidate has more than this fraction fewer enabled "
        "rules than the active version (1: never; --allow-shrink overrides once)")
    update_interval: float = Field(
        default=0, ge=0, description="seconds between scheduled updates in `lateral run` "
        "(0: no scheduled updates)")
    update_jitter: float | str = Field(
        default="10%", description="random extra delay before each scheduled update: seconds, "
        "or a percentage of update_interval ('10%')")

    @field_validator("update_jitter")
    @classmethod
    def _jitter(cls, value: float | str) -> float | str:
        if isinstance(value, str):
            text = value.strip()
            try:
                number = float(text[:-1]) if text.endswith("%") else float(text)
            except ValueError:
                raise ValueError("update_jitter is seconds (30) or a percentage ('10%')") from None
            if number < 0 or (text.endswith("%") and number > 100):
                raise ValueError("update_jitter must be 0-100% or a non-negative number of "
                                 "seconds")
            return text if text.endswith("%") else number
        if value < 0:
            raise ValueError("update_jitter must not be negative")
        return value

    def jitter_seconds(self) -> float:
        """The largest random extra delay before a scheduled update, in seconds."""
        if isinstance(self.update_jitter, str):
            return float(self.update_jitter[:-1]) / 100 * self.update_interval
        return float(self.update_jitter)



class ApiSettings(BaseModel):  # the control API (api/)
    """How the control API is served."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=1, le=65535)
    # Serve the API from `lateral run` itself (one process). The appliance image runs it as a
    # unit of its own instead (`lateral api serve`, without the capture capabilities).
    with_run: bool = False
    tls_cert: Path | None = Field(default=None, description="PEM certificate (default: "
                                  "self-signed, generated under <state_dir>/api/tls)")
    tls_key: Path | None = None
    client_ca: Path | None = Field(default=None, description="CA file: require client "
                                   "certificates signed by it (mTLS)")
    token_file: Path | None = None  # default <state_dir>/api/tokens.json
    audit_log: Path | None = None  # default <state_dir>/api/audit.jsonl
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    auth_failures_per_minute: int = Field(default=10, ge=1, le=10_000)



class Settings(BaseSettings):
    """Everything Lateral is configured with."""

    model_config = SettingsConfigDict(
        env_prefix="LATERAL_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    sensor: str = Field(default_factory=socket.gethostname)
    host: str | None = None
    state_dir: Path = Field(default_factory=lambda: default_state_dir())
    engine: EngineSettings = Field(default_factory=EngineSettings)
    vars: RuleVars = Field(default_factory=RuleVars)
    eve: EveSettings = Field(default_factory=EveSettings)
    tunnels: TunnelSettings = Field(default_factory=TunnelSettings)
    inventory: tuple[VmIdentity, ...] = ()
    rule_files: tuple[Path, ...] = ()
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    policy: Path | None = None  # the inter-VM policy file (see appliance.policy.model)
    es: EsSettings = Field(default_factory=EsSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file; init_settings carries the file's contents.
        return (env_settings, init_settings)


def format_validation(exc: ValidationError, source: str, what: str = "configuration") -> str:
    """A pydantic validation error as lines a user can act on: ``field.path: message``."""
    lines = [f"{source}: invalid {what}"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def load_yaml_mapping(path: Path, what: str = "config file") -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping; :class:`ConfigError` says what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: not valid YAML: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return loaded


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Load the settings from ``path`` (YAML) and the environment; ``overrides`` win over both."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        data = load_yaml_mapping(path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, source)) from None


def default_state_dir() -> Path:
    """Where Lateral keeps state by default: system-wide as root, per user otherwise."""
    if os.geteuid() == 0:
        return Path("/var/lib/lateral")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "lateral"
