"""Linux-bridge mirrors with ``tc mirred``, through netlink (pyroute2).

For each chosen tap (a VM's port on a Linux bridge) Lateral adds a ``clsact`` qdisc and two
match-all u32 filters — one on ingress (what the VM sends), one on egress (what it receives) —
whose ``mirred egress mirror`` action copies every frame to the capture NIC. Lateral's filters
carry their own preference number, so attaching is idempotent (existing ones are replaced),
listing finds only Lateral's, and detaching removes only Lateral's (and the clsact qdisc when
nothing else uses it).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from appliance.errors import CaptureError

__all__ = ["PRIO", "TapMirror", "attach_taps", "detach_taps", "list_tap_mirrors"]

PRIO = 0x4C41  # "LA": the preference number that marks Lateral's filters
_INGRESS = 0xFFFFFFF2
_EGRESS = 0xFFFFFFF3
_ETH_P_ALL = 0x0003
_HINT = "run as root, or give Lateral CAP_NET_ADMIN"


@dataclass(frozen=True, slots=True)
class TapMirror:
    """One mirrored tap: where its frames go, and how many the filters have copied."""

    tap: str
    capture: str
    directions: tuple[str, ...]


def _index(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise CaptureError(f"interface {name!r} does not exist", hint="check `ip link`")
    return int(found[0])


def _error(exc: NetlinkError, doing: str) -> CaptureError:
    if exc.code in (errno.EPERM, errno.EACCES):
        return CaptureError(f"not allowed to {doing}", hint=_HINT)
    return CaptureError(f"cannot {doing}: {exc}")


def _ours(ipr: IPRoute, index: int, parent: int) -> list[int]:
    """Handles of Lateral's filters on one hook."""
    try:
        filters = ipr.get_filters(index, parent=parent)
    except NetlinkError:
        return []
    out = []
    for f in filters:
        prio = f["info"] >> 16
        if prio == PRIO and f.get_attr("TCA_KIND") == "u32" and f.get_attr("TCA_OPTIONS"):
            out.append(int(f["handle"]))
    return out


def _has_clsact(ipr: IPRoute, index: int) -> bool:
    return any(q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index))


def attach_taps(taps: list[str], capture: str, *, ingress_only: bool = False
                ) -> list[TapMirror]:
    """Mirror each tap to ``capture``; idempotent.

    Both directions by default. When every VM of a conversation is mirrored, ``ingress_only``
    (what each VM sends) sees each frame once instead of twice; traffic from VMs that are not
    mirrored is then seen only if it is sent by a mirrored one.
    """
    if not taps:
        raise CaptureError("no taps given: which VM ports should be mirrored?")
    if capture in taps:
        raise CaptureError(f"{capture} is the capture NIC; it cannot also be a mirrored tap")
    out = []
    with IPRoute() as ipr:
        dest = _index(ipr, capture)
        for tap in taps:
            index = _index(ipr, tap)
            try:
                if not _has_clsact(ipr, index):
                    ipr.tc("add", "clsact", index)
                _remove(ipr, index)
                action = {"kind": "mirred", "direction": "egress", "action": "mirror",
                          "ifindex": dest}
                hooks = ((_INGRESS, "ingress"),) if ingress_only else (
                    (_INGRESS, "ingress"), (_EGRESS, "egress"))
                for parent, _ in hooks:
                    ipr.tc("add-filter", "u32", index, parent=parent, protocol=_ETH_P_ALL,
                           prio=PRIO, keys=["0x0/0x0+0"], target=0x10001, action=[action])
            except NetlinkError as exc:
                raise _error(exc, f"mirror {tap} to {capture}") from None
            out.append(TapMirror(tap, capture, tuple(label for _, label in hooks)))
    return out


def _remove(ipr: IPRoute, index: int) -> int:
    removed = 0
    for parent in (_INGRESS, _EGRESS):
        if _ours(ipr, index, parent):
            ipr.tc("del-filter", "u32", index, parent=parent, prio=PRIO, protocol=_ETH_P_ALL,
                   target=0x10001, keys=["0x0/0x0+0"])
            removed += 1
    return removed


def detach_taps(taps: list[str]) -> int:
    """Remove Lateral's mirrors from the taps; return how many hooks were cleaned."""
    removed = 0
    with IPRoute() as ipr:
        for tap in taps:
            index = _index(ipr, tap)
            try:
                removed += _remove(ipr, index)
                others = ipr.get_filters(index, parent=_INGRESS) + ipr.get_filters(
                    index, parent=_EGRESS)
                if _has_clsact(ipr, index) and not others:
                    ipr.tc("del", "clsact", index)
            except NetlinkError as exc:
                raise _error(exc, f"remove the mirror from {tap}") from None
    return removed


def list_tap_mirrors() -> list[TapMirror]:
    """Every interface with Lateral's mirror filters, and where they copy to."""
    out = []
    with IPRoute() as ipr:
        names = {int(link["index"]): str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()}
        for index, name in sorted(names.items()):
            directions = []
            target = ""
            for parent, label in ((_INGRESS, "ingress"), (_EGRESS, "egress")):
                if not _ours(ipr, index, parent):
                    continue
                directions.append(label)
                target = target or _mirror_target(ipr, index, parent, names)
            if directions:
                out.append(TapMirror(name, target, tuple(directions)))
    return out


def _mirror_target(ipr: IPRoute, index: int, parent: int, names: dict[int, str]) -> str:
    for f in ipr.get_filters(index, parent=parent):
        if f["info"] >> 16 != PRIO:
            continue
        options = f.get_attr("TCA_OPTIONS")
        if not options:
            continue
        act = options.get_attr("TCA_U32_ACT")
        for prio in (act.get_attrs("TCA_ACT_PRIO_1") if act else []):
            params = prio.get_attr("TCA_ACT_OPTIONS").get_attr("TCA_MIRRED_PARMS")
            if params:
                return names.get(int(params["ifindex"]), str(params["ifindex"]))
    return "?"
