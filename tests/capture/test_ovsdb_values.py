"""OVSDB value encodings (RFC 7047 5.1): decode, read as set/map/optional, encode."""

from __future__ import annotations

import pytest

from capture.ovsdb_values import (
    NamedUuid,
    OvsdbError,
    Uuid,
    as_map,
    as_optional,
    as_set,
    decode,
    encode,
    encode_map,
    encode_set,
)

U1 = "36bd7bd6-14f6-4b3e-a0c2-5bd1f3b0a8d4"
U2 = "0b5a1d1c-8a2a-4a7a-9c9d-2b2a0f5e6d7c"


def test_atoms_decode_to_python() -> None:
    assert decode("br0") == "br0"
    assert decode(7) == 7
    assert decode(1.5) == 1.5
    assert decode(True) is True
    assert decode(["uuid", U1]) == Uuid(U1)
    assert decode(["named-uuid", "row1"]) == NamedUuid("row1")


def test_sets_and_maps() -> None:
    assert decode(["set", []]) == []
    assert decode(["set", [1, 2]]) == [1, 2]
    assert decode(["set", [["uuid", U1], ["uuid", U2]]]) == [Uuid(U1), Uuid(U2)]
    assert decode(["map", [["attached-mac", "02:00:00:00:00:01"], ["iface-id", "vif-a"]]]) == {
        "attached-mac": "02:00:00:00:00:01", "iface-id": "vif-a"}
    assert decode(["map", [[1, ["uuid", U1]]]]) == {1: Uuid(U1)}


def test_column_readers_accept_every_shape() -> None:
    # A one-element set may be sent as the bare atom; an empty optional is an empty set.
    assert as_set(decode(["uuid", U1])) == [Uuid(U1)]
    assert as_set(decode(["set", []])) == []
    assert as_optional(decode(["set", []])) is None
    assert as_optional(decode(42)) == 42
    assert as_optional(decode(["set", [42]])) == 42
    assert as_map(decode(["map", []])) == {}
    assert as_map(decode(["set", []])) == {}


@pytest.mark.parametrize("raw", [None, {"a": 1}, ["uuid", "not-a-uuid"], ["named-uuid", "1x"],
                                 ["set", "x"], ["map", [["k"]]], ["bogus", 1], ["map", [[[], 1]]]])
def test_malformed_values_are_errors(raw: object) -> None:
    with pytest.raises(OvsdbError):
        decode(raw)


def test_reader_shape_errors() -> None:
    with pytest.raises(OvsdbError, match="map"):
        as_set(decode(["map", [["a", "b"]]]))
    with pytest.raises(OvsdbError, match="expected an OVSDB map"):
        as_map(decode("x"))
    with pytest.raises(OvsdbError, match="at most one"):
        as_optional(decode(["set", [1, 2]]))


def test_encode_round_trips() -> None:
    assert encode_set([Uuid(U1), NamedUuid("m")]) == ["set", [["uuid", U1], ["named-uuid", "m"]]]
    assert encode_map({"k": "v"}) == ["map", [["k", "v"]]]
    assert encode([]) == ["set", []]
    for raw in (["set", [1, 2]], ["map", [["a", "b"]]], ["uuid", U1], "x", 3, False):
        assert encode(decode(raw)) == raw or decode(encode(decode(raw))) == decode(raw)


def test_uuid_str_and_validation() -> None:
    assert str(Uuid(U1)) == U1
    with pytest.raises(OvsdbError):
        Uuid("36BD7BD6-14F6")
