from __future__ import annotations

from rules.diff import diff
from rules.rule import parse

A = 'alert tcp any any -> any any (msg:"{m}"; sid:{s}; rev:{r};)'


def test_diff_kinds() -> None:
    old = parse("\n".join([A.format(m="a", s=1, r=1), A.format(m="b", s=2, r=1),
                           A.format(m="c", s=3, r=1), "#" + A.format(m="d", s=4, r=1)]))
    new = parse("\n".join([A.format(m="a", s=1, r=1), A.format(m="b2", s=2, r=2),
                           "#" + A.format(m="c", s=3, r=1), A.format(m="d", s=4, r=1),
                           A.format(m="e", s=5, r=1)]))
    d = diff(old, new)
    assert d.counts() == {"added": 1, "removed": 0, "changed": 1, "enabled": 1, "disabled": 1}
    assert [r.sid for r in d.added] == [5]
    assert [n.sid for _, n in d.changed] == [2]
    assert [r.sid for r in d.enabled] == [4] and [r.sid for r in d.disabled] == [3]
    assert [r.sid for r in diff(new, old).removed] == [5]
    assert diff(old, old).empty
