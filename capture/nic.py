"""Preparing the capture NIC with netlink (pyroute2).

A capture NIC receives a copy of other machines' traffic: it must be up, promiscuous, carry no
address (so the appliance never answers on it), and have the offloads that merge or reshape
packets turned off — GRO/LRO hand the engine super-frames that never crossed the wire.
:func:`prepare_nic` does that and reports what it found and changed; a missing NIC or lacking
capabilities give a :class:`~appliance.errors.CaptureError` with the fix.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass, field

from pyroute2 import IPRoute
from pyroute2.ethtool import Ethtool
from pyroute2.netlink.exceptions import NetlinkError

from appliance.errors import CaptureError

__all__ = ["CAPTURE_OFFLOADS", "NicState", "prepare_nic"]

log = logging.getLogger("lateral.capture")

# Offloads that change what the engine sees: receive-side coalescing of segments.
CAPTURE_OFFLOADS = ("rx-gro", "rx-lro", "rx-gro-hw", "rx-gro-list", "rx-udp-gro-forwarding")

_IFF_UP = 0x1
_IFF_PROMISC = 0x100
_CAPS_HINT = "run as root, or give Lateral CAP_NET_ADMIN and CAP_NET_RAW"


@dataclass(frozen=True, slots=True)
class NicState:
    """What the capture NIC looks like after preparation."""

    name: str
    index: int
    up: bool
    promisc: bool
    mtu: int
    operstate: str
    addresses: tuple[str, ...]
    offloads_disabled: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())


def _netlink_error(name: str, exc: NetlinkError, doing: str) -> CaptureError:
    if exc.code in (errno.EPERM, errno.EACCES):
        return CaptureError(f"not allowed to {doing} on {name}", hint=_CAPS_HINT)
    return CaptureError(f"cannot {doing} on {name}: {exc}")


def _disable_offloads(name: str) -> tuple[tuple[str, ...], list[str]]:
    warnings: list[str] = []
    changed: list[str] = []
    ethtool = Ethtool()
    try:
        features = ethtool.get_features(name)
        for feature in CAPTURE_OFFLOADS:
            state = features.features.get(feature)
            if state is None or not state.enable:
                continue
            if not state.available:
                warnings.append(f"{feature} is on and the driver does not let it be turned off")
                continue
            state.enable = False
            changed.append(feature)
        if changed:
            ethtool.set_features(name, features)
    except (OSError, NetlinkError) as exc:
        code = getattr(exc, "errno", None) or getattr(exc, "code", None)
        if code in (errno.EPERM, errno.EACCES):
            raise CaptureError(f"not allowed to change offloads on {name}",
                               hint=_CAPS_HINT) from None
        warnings.append(f"could not read or change offloads on {name}: {exc}")
    finally:
        ethtool.close()
    return tuple(changed), warnings


def prepare_nic(name: str, *, mtu: int | None = None, promisc: bool = True,
                offloads: bool = True) -> NicState:
    """Bring ``name`` up for capture: up, promiscuous, MTU, offloads off; report the result."""
    warnings: list[str] = []
    with IPRoute() as ipr:
        try:
            found = ipr.link_lookup(ifname=name)
        except NetlinkError as exc:
            raise _netlink_error(name, exc, "look up the interface") from None
        if not found:
            raise CaptureError(f"capture interface {name!r} does not exist",
                               hint="check `ip link`; set capture.interface in the config")
        index = found[0]
        changes: dict[str, object] = {}
        link = ipr.get_links(index)[0]
        flags = int(link["flags"])
        if not flags & _IFF_UP:
            changes["state"] = "up"
        if promisc and not flags & _IFF_PROMISC:
            changes["flags"] = flags | _IFF_PROMISC | _IFF_UP
            changes["mask"] = _IFF_PROMISC | _IFF_UP
        if mtu is not None and link.get_attr("IFLA_MTU") != mtu:
            changes["mtu"] = mtu
        if changes:
            try:
                ipr.link("set", index=index, **changes)
            except NetlinkError as exc:
                raise _netlink_error(name, exc, "set " + ", ".join(changes)) from None
        link = ipr.get_links(index)[0]
        addresses = tuple(
            f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
            for a in ipr.get_addr(index=index)
            if a.get_attr("IFA_ADDRESS") and not str(a.get_attr("IFA_ADDRESS")).startswith("fe80")
        )
    if addresses:
        warnings.append(f"{name} has addresses {', '.join(addresses)}: a capture NIC should have "
                        "none (the appliance must not answer on it)")
    disabled: tuple[str, ...] = ()
    if offloads:
        disabled, more = _disable_offloads(name)
        warnings.extend(more)
    flags = int(link["flags"])
    operstate = str(link.get_attr("IFLA_OPERSTATE") or "UNKNOWN")
    if operstate not in ("UP", "UNKNOWN"):
        warnings.append(f"{name} is {operstate}: no carrier, so nothing will be captured yet")
    for warning in warnings:
        log.warning("%s", warning)
    return NicState(name, index, bool(flags & _IFF_UP), bool(flags & _IFF_PROMISC),
                    int(link.get_attr("IFLA_MTU") or 0), operstate, addresses, disabled,
                    tuple(warnings))
