"""The isolated network the image tests boot the VM in: a namespace of its own whose only DNS
server is the test's, answering for the names the test gives (checked with the system's own
resolver, as qemu's user network and the guest use it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "image"))
import boot  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates a network namespace")

LOOKUP = """
import socket, sys
for name in sys.argv[1:]:
    try:
        print(name, socket.gethostbyname(name))
    except OSError:
        print(name, "unknown")
"""


def test_namespace_resolves_only_the_given_names_through_its_dns_server() -> None:
    name = f"latnet-{os.getpid()}"
    with boot.NetNamespace(name) as netns, \
            boot.DnsResponder(netns, {"es.lateral.test": "10.0.2.100"}) as dns:
        out = subprocess.run(netns.wrap([sys.executable, "-c", LOOKUP, "es.lateral.test",
                                         "ES.Lateral.Test.", "rules.example.org"]),
                             capture_output=True, text=True, timeout=60, check=True).stdout
        assert out.splitlines() == ["es.lateral.test 10.0.2.100", "ES.Lateral.Test. 10.0.2.100",
                                    "rules.example.org unknown"]
        assert dns.asked("es.lateral.test") and dns.asked("rules.example.org")
        # the namespace holds only its loopback: nothing of the host is reachable from it
        links = subprocess.run(["ip", "-n", name, "-o", "link"], capture_output=True,
                               text=True, check=True).stdout
        assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                      text=True).stdout


def test_dns_responder_ignores_what_is_not_a_query() -> None:
    with boot.NetNamespace(f"latnet2-{os.getpid()}") as netns, \
            boot.DnsResponder(netns, {}) as dns:
        assert dns.answer(b"") is None
        assert dns.answer(b"\x00\x01\x81\x80" + b"\x00" * 8) is None   # a response
        assert dns.answer(b"\x00\x01\x01\x00\x00\x01" + b"\x00" * 6 + b"\x03abc") is None
        assert dns.questions == []
