"""The policy file: who may talk to whom across the virtual switch.

One YAML file, validated when loaded::

    default_action: allow          # or alert: what happens to traffic no rule matches
    dedup_window: 300              # seconds: one finding with a count per VM pair and port
    vms:                           # merged with the appliance's inventory (config / OVSDB)
      - {name: db01, ips: [10.0.0.20], labels: {zone: data}}
    groups:                        # an end is in a group if any of its selectors matches
      web:  {labels: {zone: web}}
      data: {labels: {zone: data}}
      mgmt: {cidrs: [192.168.100.0/24]}
      dmz:  {vlans: [100]}
    rules:                         # ordered: the first rule that matches decides
      - {id: web-to-db, from: web, to: data, proto: tcp, ports: [3306], action: allow}
      - {id: no-dev-to-data, name: "dev must not reach data", from: dev, to: data, action: alert}
    checks:                        # hygiene checks (defaults shown)
      scan: {ports: 10, hosts: 10, window: 60}
      management: {cidrs: [192.168.100.0/24], allow_from: [admin]}   # ports: hypervisor's
      first_seen: {enabled: false, learning: 86400}

``any`` is a built-in group. A rule may also name ``app_proto`` (Suricata's, e.g. ``http``).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import VmIdentity, format_validation, load_yaml_mapping
from ..errors import ConfigError

__all__ = ["ChecksSpec", "FirstSeenSpec", "GroupSpec", "L2Spec", "ManagementSpec", "PolicyFile",
           "PolicyRule", "ScanSpec", "load_policy", "parse_policy"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
Action = Literal["allow", "alert"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class GroupSpec(_Model):
    """A zone: VMs with these labels, addresses in these CIDRs, traffic on these VLANs/VNIs."""

    labels: dict[str, str] = Field(default_factory=dict)
    cidrs: tuple[str, ...] = ()
    vlans: tuple[int, ...] = ()
    vms: tuple[str, ...] = ()  # VM names

    @field_validator("cidrs")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for cidr in value:
            try:
                out.append(str(ipaddress.ip_network(cidr, strict=False)))
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR (e.g. 10.0.0.0/24)") from None
        return tuple(out)

    @model_validator(mode="after")
    def _not_empty(self) -> GroupSpec:
        if not (self.labels or self.cidrs or self.vlans or self.vms):
            raise ValueError("a group needs at least one of labels, cidrs, vlans, vms")
        return self


class PolicyRule(_Model):
    """One ordered rule."""

    id: str
    name: str = ""
    src: str = Field(alias="from")
    dest: str = Field(alias="to")
    proto: Literal["tcp", "udp", "icmp", "any"] = "any"
    ports: tuple[int, ...] = ()
    app_proto: str | None = None
    action: Action

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(f"{value!r}: rule ids are letters, digits, '_', '.', '-' (max 64)")
        return value

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for port in value:
            if not 0 < port < 65536:
                raise ValueError(f"{port} is not a port number")
        return value


class ScanSpec(_Model):
    """Port scan: ``ports`` distinct ports on one target; sweep: ``hosts`` distinct targets."""

    enabled: bool = True
    ports: int = Field(default=10, ge=2)
    hosts: int = Field(default=10, ge=2)
    window: float = Field(default=60.0, gt=0)


# Hypervisor and management services a guest has no business reaching: SSH, HTTPS (vCenter,
# ESXi), VMware auth (902), libvirt (16509/16514), OVSDB (6640), IPMI (623), VNC/SPICE consoles.
_MGMT_PORTS = (22, 443, 623, 902, 5900, 5901, 6640, 8006, 16509, 16514)


class ManagementSpec(_Model):
    """The management plane: its addresses, its ports, and who may reach it."""

    enabled: bool = True
    cidrs: tuple[str, ...] = ()
    ports: tuple[int, ...] = _MGMT_PORTS
    allow_from: tuple[str, ...] = ()

    @field_validator("cidrs")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return GroupSpec._cidrs(value)


class FirstSeenSpec(_Model):
    enabled: bool = False
    learning: float = Field(default=86400.0, gt=0)


_LoginProto = Literal["ftp", "telnet", "pop3", "imap", "http"]
_LOGIN_PORTS: dict[int, _LoginProto] = {21: "ftp", 23: "telnet", 110: "pop3", 143: "imap",
                                        80: "http", 8080: "http", 8000: "http", 8008: "http"}


class L2Spec(_Model):
    """The L2 hygiene checks (fed by the L2 sniffer, live or over a capture file)."""

    arp: bool = True
    dhcp: bool = True
    ra: bool = True
    vlan_double_tag: bool = True
    mac_flood_per_second: int = Field(default=50, ge=0)  # 0 turns the check off
    dhcp_servers: tuple[str, ...] = ()  # MACs or addresses; empty: the first server seen
    routers: tuple[str, ...] = ()  # MACs or link-local addresses; empty: the first router seen
    cleartext: bool = True
    cleartext_ports: dict[int, _LoginProto] = Field(default_factory=lambda: dict(_LOGIN_PORTS))


class SpoofSpec(_Model):
    enabled: bool = True


class ChecksSpec(_Model):
    """The hygiene checks and their settings."""

    scan: ScanSpec = Field(default_factory=ScanSpec)
    management: ManagementSpec = Field(default_factory=ManagementSpec)
    first_seen: FirstSeenSpec = Field(default_factory=FirstSeenSpec)
    spoof: SpoofSpec = Field(default_factory=SpoofSpec)
    l2: L2Spec = Field(default_factory=L2Spec)


class PolicyFile(_Model):
    """The whole policy."""

    version: Literal[1] = 1
    default_action: Action = "allow"
    dedup_window: float = Field(default=300.0, gt=0)
    vms: tuple[VmIdentity, ...] = ()
    groups: dict[str, GroupSpec] = Field(default_factory=dict)
    rules: tuple[PolicyRule, ...] = ()
    checks: ChecksSpec = Field(default_factory=ChecksSpec)

    @model_validator(mode="after")
    def _references(self) -> PolicyFile:
        for group in self.checks.management.allow_from:
            if group != "any" and group not in self.groups:
                raise ValueError(f"checks.management.allow_from: unknown group {group!r}")
        if "any" in self.groups:
            raise ValueError("'any' is built in; it cannot be redefined")
        seen: set[str] = set()
        for n, rule in enumerate(self.rules):
            if rule.id in seen:
                raise ValueError(f"rules[{n}]: duplicate rule id {rule.id!r}")
            seen.add(rule.id)
            for side in (rule.src, rule.dest):
                if side != "any" and side not in self.groups:
                    raise ValueError(f"rules[{n}] ({rule.id}): unknown group {side!r}")
        return self


def parse_policy(data: Any, source: str = "policy") -> PolicyFile:
    """Validate an already-loaded mapping; :class:`ConfigError` lists every problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    try:
        return PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, source, "policy")) from None


def load_policy(path: Path) -> PolicyFile:
    """Read and validate a policy file."""
    return parse_policy(load_yaml_mapping(path, "policy file"), str(path))
