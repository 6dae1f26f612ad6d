from __future__ import annotations

from capture.visibility import VisibilityCounter, VisibilityReport

OWN = bytes.fromhex("020000000001")


def _frame(dst: str, src: str = "52:54:00:00:00:0a") -> bytes:
    return bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", "")) + \
        b"\x08\x00" + bytes(46)


def test_only_foreign_unicast_counts() -> None:
    c = VisibilityCounter(OWN)
    c.feed(_frame("ff:ff:ff:ff:ff:ff"))  # broadcast
    c.feed(_frame("01:00:5e:00:00:01"))  # multicast
    c.feed(_frame("02:00:00:00:00:01"))  # for this NIC
    c.feed(b"short")
    assert (c.frames, c.foreign_unicast) == (3, 0)
    c.feed(_frame("52:54:00:00:00:14"))
    c.feed(_frame("52:54:00:00:00:0a", src="52:54:00:00:00:14"))
    assert (c.foreign_unicast, len(c.sources), len(c.destinations)) == (2, 2, 2)


def test_report_wording() -> None:
    ok = VisibilityReport("cap0", 5, 10, 4, 2, 2)
    bad = VisibilityReport("cap0", 5, 10, 0, 0, 0)
    assert ok.delivering and "mirror delivering" in ok.describe()
    assert not bad.delivering and "not delivering" in bad.describe()
