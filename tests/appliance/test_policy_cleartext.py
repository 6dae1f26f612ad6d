"""Cleartext credentials: the account is named, the password never appears."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson

from appliance.config import load_settings
from appliance.policy.l2checks import L2Checks
from appliance.policy.model import L2Spec
from appliance.policy.runner import policy_inventory
from lab.scenarios import write_pcap


def test_sample_capture_logins(tmp_path: Path) -> None:
    pcap = tmp_path / "sample.pcap"
    write_pcap("sample", pcap)
    settings = load_settings(Path(__file__).resolve().parents[2] / "examples" / "lab.yaml")
    checks = L2Checks(L2Spec(), policy_inventory(settings, None), dedup_window=300)
    findings = [f for f in checks.feed_captures([pcap]) if f["policy"]["check"] == "cleartext"]
    by_proto = {f["app_proto"]: f for f in findings}
    assert set(by_proto) == {"ftp", "telnet"}
    ftp, telnet = by_proto["ftp"], by_proto["telnet"]
    assert ftp["policy"]["account"] == "backup"
    assert (ftp["lateral"]["src_vm"]["name"], ftp["lateral"]["dest_vm"]["name"]) == \
        ("app01", "files01")
    assert telnet["policy"]["account"] == "root"
    assert telnet["lateral"]["dest_vm"]["name"] == "db01"
    text = orjson.dumps(findings)
    assert b"backup123" not in text and b"Winter2024!" not in text  # never the password


def _payload_checks() -> L2Checks:
    return L2Checks(L2Spec(), policy_inventory(load_settings(), None), dedup_window=300)


def test_imap_pop3_http_basic() -> None:
    from capture.l2 import FrameInfo, TcpPayload

    frame = FrameInfo(1_800_000_000.0, "52:54:00:00:00:01", "52:54:00:00:00:02", ())

    def seg(dport: int, data: bytes, sport: int = 40000) -> TcpPayload:
        return TcpPayload(frame, "10.0.0.5", "10.0.0.6", sport, dport, data)

    checks = _payload_checks()
    out = checks.feed(seg(143, b'a1 LOGIN "alice" s3cret\r\n'))
    out += checks.feed(seg(110, b"USER bob\r\n", 40001))
    assert [f["policy"]["account"] for f in out] == ["alice"]  # bob has not sent PASS yet
    out += checks.feed(seg(110, b"PASS hunter2\r\n", 40001))
    basic = base64.b64encode(b"carol:pa:ss").decode()
    out += checks.feed(seg(80, f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {basic}"
                                f"\r\n\r\n".encode(), 40002))
    plain = base64.b64encode(b"\x00dave\x00pw").decode()
    out += checks.feed(seg(143, f"a2 AUTHENTICATE PLAIN {plain}\r\n".encode(), 40003))
    assert [f["policy"]["account"] for f in out] == ["alice", "bob", "carol", "dave"]
    text = orjson.dumps(out)
    for secret in (b"s3cret", b"hunter2", b"pa:ss", b"pw\""):
        assert secret not in text


def test_benign_traffic_is_silent() -> None:
    from capture.l2 import FrameInfo, TcpPayload

    frame = FrameInfo(1_800_000_000.0, "52:54:00:00:00:01", "52:54:00:00:00:02", ())
    checks = _payload_checks()
    out = checks.feed(TcpPayload(frame, "10.0.0.5", "10.0.0.6", 40000, 80,
                                 b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"))
    out += checks.feed(TcpPayload(frame, "10.0.0.5", "10.0.0.6", 40001, 21,
                                  b"USER anonymous\r\n"))  # no password sent (yet)
    out += checks.feed(TcpPayload(frame, "10.0.0.5", "10.0.0.6", 40002, 143,
                                  b"a1 STARTTLS\r\n"))
    assert out == []
