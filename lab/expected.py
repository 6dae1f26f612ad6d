"""What stock Suricata must report on a lab capture."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Expected"]


@dataclass(frozen=True, slots=True)
class Expected:
    """The EVE output of stock Suricata 7 with `rules/bundled/lateral-demo.rules` on a capture.

    - `alerts` maps signature id to the number of EVE `alert` records; a sid that must not fire
      is absent.
    - `flows` is the number of EVE `flow` records for the inner (VM-to-VM) traffic. Suricata keys
      a flow on the 5-tuple plus the VLAN ids (stock `vlan.use-for-tracking: true`), counts an
      ICMP echo and its reply as one flow, gives each probed port of a SYN scan its own flow, and
      logs every flow still open when the capture ends.
    - `tunnel_flows` is the number of extra `flow` records for the tunnel itself. Suricata 7.0.10
      gives the outer UDP of VXLAN and GENEVE flows of their own (app_proto `failed`, one per
      outer 5-tuple: with per-flow hashed source ports that is one per direction of every inner
      flow), but never the GRE outer of GRE or ERSPAN, and 802.1Q/QinQ tags are not tunnels.

    Verified against Suricata 7.0.10 with the stock suricata.yaml (checksum validation on).
    """

    alerts: dict[int, int]
    flows: int
    tunnel_flows: int = 0

    def describe(self) -> str:
        """A one-line summary, e.g. `flows=2 tunnel_flows=0 alerts={1000001: 1}`."""
        alerts = ", ".join(f"{sid}: {count}" for sid, count in sorted(self.alerts.items()))
        return f"flows={self.flows} tunnel_flows={self.tunnel_flows} alerts={{{alerts}}}"
