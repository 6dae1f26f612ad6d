"""First boot of the appliance VM: apply the seed's ``lateral:`` section, or safe defaults.

The VM image (``image/``) runs ``lateral appliance firstboot`` once, after cloud-init has read
its NoCloud seed (or config drive). The seed is an ordinary ``#cloud-config`` document; cloud-init
handles what it knows (users, SSH keys, hostname, write_files) and Lateral reads its own section
from the merged cloud-config cloud-init keeps at ``/var/lib/cloud/instance/cloud-config.txt``::

    #cloud-config
    ssh_authorized_keys: [ssh-ed25519 AAAA… ops@example]
    lateral:
      admin_token: lat_0123456789ab_<at least 32 characters>   # else one is generated
      ssh: true                       # off by default; keys only
      unattended_upgrades: true       # Debian security updates, off by default
      management: {address: 192.0.2.10/24, gateway: 192.0.2.1, dns: [192.0.2.53]}
      rule_sources:
        - {name: et-open, url: https://rules.emergingthreats.net/open/suricata-7.0/emerging.rules.tar.gz}
      config:                         # any Lateral setting, merged over /etc/lateral/lateral.yaml
        sensor: hv01-lateral
        es: {url: https://es.example:9200, api_key: …}
        capture: {interface: eth1}

Without a seed (or without a ``lateral:`` section) the appliance keeps its safe defaults: capture
on the second NIC, EVE output on local disk, the API on the management NIC with a generated admin
token written to the console (never to a log). Every change is validated before anything is
written: an invalid section is reported on the console and the defaults stay, and the next boot
tries again (the done-marker is written only after a successful run).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from api.tokens import TOKEN_FORMAT, TOKEN_FORMAT_HELP

from .config import Settings, format_validation, load_yaml_mapping
from .durable import replace_file
from .errors import ConfigError

__all__ = ["FirstBootSeed", "Layout", "apply", "read_seed", "render_firewall"]

log = logging.getLogger(__name__)

CLOUD_CONFIG = Path("/var/lib/cloud/instance/cloud-config.txt")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Management(_Model):
    """A static address for the management NIC (DHCP when absent)."""

    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    dns: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()


class SeedSource(_Model):
    """A rule source to register (``lateral rules sources add``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    url: str
    http_header: SecretStr | None = None


class FirstBootSeed(_Model):
    """The ``lateral:`` section of the cloud-config seed."""

    admin_token: SecretStr | None = None
    ssh: bool = False
    unattended_upgrades: bool = False
    management_interface: str = Field(default="eth0", pattern=r"^[A-Za-z0-9_.:-]{1,15}$")
    management: Management | None = None
    rule_sources: tuple[SeedSource, ...] = ()
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("admin_token")
    @classmethod
    def _token_format(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not TOKEN_FORMAT.match(value.get_secret_value()):
            raise ValueError(f"{TOKEN_FORMAT_HELP} (`lateral api token create` makes one)")
        return value

    @field_validator("config")
    @classmethod
    def _no_state_dir_move(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "state_dir" in value:
            raise ValueError("state_dir is fixed on the appliance (/var/lib/lateral)")
        return value


@dataclass(frozen=True)
class Layout:
    """Where the appliance's files are (a different root in tests)."""

    root: Path = Path("/")

    def __truediv__(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    @property
    def config(self) -> Path:
        return self / "etc/lateral/lateral.yaml"

    @property
    def marker(self) -> Path:
        return self / "var/lib/lateral/.configured"

    @property
    def cloud_config(self) -> Path:
        return self / str(CLOUD_CONFIG)

    @property
    def console(self) -> Path:
        return self / "dev/console"


Runner = Callable[[Sequence[str]], None]


def _run_command(argv: Sequence[str]) -> None:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ConfigError(f"{' '.join(argv)} failed: {(proc.stderr or proc.stdout).strip()}")


def read_seed(path: Path) -> FirstBootSeed | None:
    """The seed's ``lateral:`` section; None when there is no seed or no such section."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the cloud-init configuration {path}: {exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML: {exc}") from None
    if not isinstance(doc, dict) or doc.get("lateral") is None:
        return None
    try:
        return FirstBootSeed.model_validate(doc["lateral"])
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, f"{path} (lateral:)", "first-boot section")) \
            from None


_ICMP4 = "echo-request, destination-unreachable, time-exceeded, parameter-problem"
_ICMP6 = ("echo-request, destination-unreachable, packet-too-big, time-exceeded, "
          "parameter-problem, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert")


def render_firewall(*, management: str, capture: str, api_port: int, ssh: bool) -> str:
    """The appliance's nftables ruleset: only the API (and SSH when on) on the management NIC,
    nothing at all for the host on the capture NIC, no forwarding."""
    tcp = ", ".join(str(p) for p in ([22] if ssh else []) + [api_port])
    what = "API and SSH" if ssh else "API"
    return f"""#!/usr/sbin/nft -f
# Lateral appliance firewall, written by `lateral appliance firstboot` — regenerate rather
# than edit. Capture (AF_PACKET) sees every frame before this filter; this only guards the
# appliance's own services.
flush ruleset

table inet lateral {{
    chain input {{
        type filter hook input priority filter; policy drop;
        iif "lo" accept
        iifname "{capture}" drop comment "capture NIC: receive-only, nothing for the host"
        ct state invalid drop
        ct state established,related accept
        iifname "{management}" icmp type {{ {_ICMP4} }} limit rate 10/second accept
        iifname "{management}" icmpv6 type {{ {_ICMP6} }} accept
        iifname "{management}" udp dport {{ 68, 546 }} accept comment "DHCP replies"
        iifname "{management}" tcp dport {{ {tcp} }} ct state new accept comment "{what}"
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
    }}
    chain output {{
        type filter hook output priority filter; policy accept;
        oifname "{capture}" drop comment "the appliance never sends on the capture NIC"
    }}
}}
"""


def _networkd_mgmt(interface: str, mgmt: Management | None) -> str:
    lines = ["# Management NIC, written by `lateral appliance firstboot`.", "[Match]",
             f"Name={interface}", "", "[Network]", "LLDP=no", "EmitLLDP=no"]
    if mgmt is None:
        lines += ["DHCP=yes", "IPv6AcceptRA=yes"]
    else:
        lines += [f"Address={mgmt.address}", "IPv6AcceptRA=no"]
        lines += [f"Gateway={mgmt.gateway}"] if mgmt.gateway else []
        lines += [f"DNS={d}" for d in mgmt.dns]
    return "\n".join(lines) + "\n"


def _networkd_capture(interface: str) -> str:
    return ("# Capture NIC, written by `lateral appliance firstboot`: receive-only.\n"
            f"[Match]\nName={interface}\n\n[Link]\nARP=no\nPromiscuous=yes\n"
            "RequiredForOnline=no\n\n[Network]\nDHCP=no\nLinkLocalAddressing=no\n"
            "IPv6AcceptRA=no\nLLDP=no\nEmitLLDP=no\nLLMNR=no\nMulticastDNS=no\n")


def _write_text(path: Path, text: str, mode: int = 0o644) -> None:
    replace_file(path, text.encode(), mode)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class Outcome:
    """What the first boot did (printed to the console; secrets only where stated)."""

    seeded: bool
    settings: Settings
    admin_token_id: str | None = None
    generated_token: str | None = None
    notes: list[str] = field(default_factory=list)


def apply(seed: FirstBootSeed | None, layout: Layout = Layout(), *,
          run: Runner = _run_command, owner: tuple[int, int] | None = None) -> Outcome:
    """Validate the seed against the appliance's configuration, then write everything.

    Nothing is written before the merged configuration validates. ``run`` executes system
    commands (systemctl, nft, networkctl); ``owner`` is the uid/gid of the service user the
    state and configuration belong to.
    """
    from api.settings import api_paths
    from api.tokens import Role, TokenStore

    seed = seed or FirstBootSeed()
    base = load_yaml_mapping(layout.config, "appliance configuration")
    merged = _deep_merge(base, seed.config)
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, "the seed's lateral.config")) from None
    capture = settings.capture.interface or "eth1"
    if capture == seed.management_interface:
        raise ConfigError(f"the capture NIC and the management NIC are both {capture}",
                          hint="the capture NIC must carry no address and no services")
    outcome = Outcome(seeded=bool(seed.model_fields_set), settings=settings)

    # 1. configuration (validated above)
    if seed.config:
        banner = ("# Written by `lateral appliance firstboot` from the seed merged over the "
                  "image's defaults.\n")
        _write_text(layout.config, banner + yaml.safe_dump(merged, sort_keys=False), 0o640)
        outcome.notes.append(f"configuration: {', '.join(sorted(seed.config))} from the seed")

    # 2. networking and firewall
    networkd = layout / "etc/systemd/network"
    _write_text(networkd / "10-mgmt.network", _networkd_mgmt(seed.management_interface,
                                                         seed.management))
    _write_text(networkd / "20-capture.network", _networkd_capture(capture))
    api_port = settings.api.port
    _write_text(layout / "etc/nftables.conf", render_firewall(
        management=seed.management_interface, capture=capture, api_port=api_port, ssh=seed.ssh),
        0o755)
    run(["nft", "-f", str(layout / "etc/nftables.conf")])
    run(["networkctl", "reload"])
    outcome.notes.append(
        f"management NIC {seed.management_interface}: "
        f"{seed.management.address if seed.management else 'DHCP'}; capture NIC {capture}: "
        f"no address; firewall admits TCP {api_port}{' and 22 (SSH)' if seed.ssh else ''}")

    # 3. SSH (keys only) and unattended upgrades: both opt-in
    if seed.ssh:
        run(["systemctl", "enable", "--now", "ssh.service"])
        outcome.notes.append("SSH on (keys only)")
    if seed.unattended_upgrades:
        _write_text(layout / "etc/apt/apt.conf.d/20auto-upgrades",
               'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n')
        run(["systemctl", "enable", "--now", "apt-daily.timer", "apt-daily-upgrade.timer"])
        outcome.notes.append("unattended security upgrades on")

    # 4. the first admin token (paths under the layout's root: "/" on the appliance)
    rooted = settings.model_copy(update={"state_dir": layout / str(settings.state_dir)})
    store = TokenStore(layout / str(api_paths(settings, settings.api).token_file))
    if seed.admin_token is not None:
        existing = {r.id for r in store.list()}
        token = seed.admin_token.get_secret_value()
        token_id = token.split("_")[1]  # the format was checked with the seed
        if token_id not in existing:
            store.adopt("bootstrap", Role.admin, token)
        outcome.admin_token_id = token_id
    elif not any(r.role is Role.admin and r.revoked is None for r in store.list()):
        record, token = store.create("bootstrap", Role.admin)
        outcome.admin_token_id, outcome.generated_token = record.id, token

    # 5. rule sources (the update itself runs after the sensor is up)
    if seed.rule_sources:
        from rules.settings import rules_root, rules_settings
        from rules.sources import Sources

        rules = rules_settings(rooted)
        sources = Sources(rooted, rules, rules_root(rooted, rules))
        known = {s.name for s in sources.list()}
        for src in seed.rule_sources:
            if src.name in known:
                continue
            header = src.http_header.get_secret_value() if src.http_header else None
            sources.add(src.name, src.url, http_header=header)
        run(["systemctl", "start", "--no-block", "lateral-rules-update.service"])
        outcome.notes.append("rule sources: " + ", ".join(s.name for s in seed.rule_sources))

    # 6. ownership, then the marker
    state = rooted.state_dir
    state.mkdir(parents=True, exist_ok=True)
    if owner is not None:
        for path in [state, *state.rglob("*")]:
            os.lchown(path, *owner)
        os.chown(layout.config, 0, owner[1])
    _write_text(layout.marker, "\n".join(outcome.notes) + "\n", 0o640)
    return outcome


def console_report(outcome: Outcome) -> str:
    """The lines for the console; the generated token goes only here, never to a log."""
    lines = ["", "Lateral appliance: first boot " +
             ("configured from the seed" if outcome.seeded else "with safe defaults (no seed)")]
    lines += [f"  {n}" for n in outcome.notes]
    if outcome.generated_token:
        lines += [f"  API admin token (shown once): {outcome.generated_token}"]
    elif outcome.admin_token_id:
        lines += [f"  API admin token: the seed's (id {outcome.admin_token_id})"]
    lines.append(f"  API: https://<management address>:{outcome.settings.api.port}/health")
    return "\n".join(lines) + "\n"


def service_owner(name: str = "lateral") -> tuple[int, int] | None:
    """The service user's uid/gid, or None when it does not exist (not on the appliance)."""
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def main(layout: Layout = Layout(), seed_path: Path | None = None, *,
         run: Runner = _run_command) -> int:
    """``lateral appliance firstboot``: exit 0 when applied, 1 (defaults kept) when not."""
    failed = False
    try:
        outcome = apply(read_seed(seed_path or layout.cloud_config), layout, run=run,
                        owner=service_owner())
    except ConfigError as exc:
        # An invalid seed must not leave the appliance unreachable: safe defaults, loudly.
        failed = True
        hint = f"\n({exc.hint})" if exc.hint else ""
        _to_console(layout, f"\nLateral appliance: the seed's lateral: section cannot be "
                            f"applied, keeping safe defaults:\n{exc}{hint}\n")
        outcome = apply(None, layout, run=run, owner=service_owner())
    report = console_report(outcome)
    _to_console(layout, report)
    log.info("first boot applied (admin token id %s)", outcome.admin_token_id)
    if failed:
        layout.marker.unlink(missing_ok=True)  # try the (fixed) seed again next boot
        return 1
    return 0


def _to_console(layout: Layout, text: str) -> None:
    try:
        with open(layout.console, "a", encoding="utf-8") as con:
            con.write(text.replace("\n", "\r\n"))
    except OSError:
        # No console (a container, a test): stdout, which the unit sends to the console too.
        # The generated token is then on stdout only if there was no console to take it.
        sys.stdout.write(text)
