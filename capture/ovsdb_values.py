"""OVSDB's JSON value encodings (RFC 7047 section 5.1), sans-I/O.

On the wire an OVSDB value is an atom (string, integer, real, boolean, ``["uuid", "…"]`` or
``["named-uuid", "…"]``), a set (``["set", [atom, …]]`` — but a set of exactly one element may be
sent as the bare atom) or a map (``["map", [[key, value], …]]``). This module turns those into
plain Python values and back:

- :func:`decode` maps a wire value to atoms (``str``, ``int``, ``float``, ``bool``,
  :class:`Uuid`), ``list`` for sets and ``dict`` for maps;
- :func:`as_set`, :func:`as_map` and :func:`as_optional` read a decoded column whatever its
  shape (a bare atom is a one-element set; an empty set is an absent optional value);
- :func:`encode`, :func:`encode_set` and :func:`encode_map` go the other way for ``transact``.

Malformed values raise :class:`OvsdbError`, a :class:`~appliance.errors.CaptureError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from appliance.errors import CaptureError

__all__ = [
    "Atom",
    "NamedUuid",
    "OvsdbError",
    "Uuid",
    "Value",
    "as_map",
    "as_optional",
    "as_set",
    "decode",
    "encode",
    "encode_map",
    "encode_set",
]

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ID = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9]*$")


class OvsdbError(CaptureError):
    """OVSDB refused a request, answered with something malformed, or could not be reached.

    ``error`` and ``details`` are the server's own words where it gave them.
    """

    def __init__(self, message: str, *, error: str | None = None, details: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.error = error
        self.details = details


@dataclass(frozen=True, slots=True)
class Uuid:
    """A row's UUID (``["uuid", "…"]``)."""

    value: str

    def __post_init__(self) -> None:
        if not _UUID.match(self.value):
            raise OvsdbError(f"not an OVSDB uuid: {self.value!r}")

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class NamedUuid:
    """A row inserted earlier in the same transaction (``["named-uuid", "…"]``)."""

    name: str

    def __post_init__(self) -> None:
        if not _ID.match(self.name):
            raise OvsdbError(f"not a valid uuid-name: {self.name!r}")


Atom = str | int | float | bool | Uuid | NamedUuid
Value = Atom | list[Atom] | dict[Atom, Atom]


def _decode_atom(raw: Any) -> Atom:
    if isinstance(raw, bool | int | float | str):
        return raw
    if isinstance(raw, list) and len(raw) == 2 and isinstance(raw[1], str):
        if raw[0] == "uuid":
            return Uuid(raw[1])
        if raw[0] == "named-uuid":
            return NamedUuid(raw[1])
    raise OvsdbError(f"not an OVSDB atom: {raw!r}")


def decode(raw: Any) -> Value:
    """A wire value as Python: atoms, ``list`` for ``["set", …]``, ``dict`` for ``["map", …]``."""
    if isinstance(raw, list) and len(raw) == 2 and raw[0] in ("set", "map"):
        tag, items = raw
        if not isinstance(items, list):
            raise OvsdbError(f"malformed OVSDB {tag}: {raw!r}")
        if tag == "set":
            return [_decode_atom(item) for item in items]
        out: dict[Atom, Atom] = {}
        for pair in items:
            if not isinstance(pair, list) or len(pair) != 2:
                raise OvsdbError(f"malformed OVSDB map entry: {pair!r}")
            out[_decode_atom(pair[0])] = _decode_atom(pair[1])
        return out
    return _decode_atom(raw)


def as_set(value: Value) -> list[Atom]:
    """A decoded set column as a list (a bare atom is a one-element set)."""
    if isinstance(value, dict):
        raise OvsdbError(f"expected an OVSDB set, got a map: {value!r}")
    if isinstance(value, list):
        return value
    return [value]


def as_map(value: Value) -> dict[Atom, Atom]:
    """A decoded map column (an empty map may come as an empty set)."""
    if isinstance(value, dict):
        return value
    if value == []:
        return {}
    raise OvsdbError(f"expected an OVSDB map, got {value!r}")


def as_optional(value: Value) -> Atom | None:
    """An optional column (a set of zero or one element): the atom, or ``None``."""
    items = as_set(value)
    if len(items) > 1:
        raise OvsdbError(f"expected at most one value, got {value!r}")
    return items[0] if items else None


def _encode_atom(atom: Atom) -> Any:
    if isinstance(atom, Uuid):
        return ["uuid", atom.value]
    if isinstance(atom, NamedUuid):
        return ["named-uuid", atom.name]
    if isinstance(atom, bool | int | float | str):
        return atom
    raise OvsdbError(f"cannot encode {atom!r} as an OVSDB atom")


def encode_set(items: Iterable[Atom]) -> list[Any]:
    """``["set", […]]`` — always the explicit form, which the server accepts for any set."""
    return ["set", [_encode_atom(item) for item in items]]


def encode_map(items: Mapping[Any, Atom]) -> list[Any]:
    """``["map", [[key, value], …]]``."""
    return ["map", [[_encode_atom(k), _encode_atom(v)] for k, v in items.items()]]


def encode(value: Value) -> Any:
    """A Python value on the wire: lists become sets, dicts maps, atoms stay atoms."""
    if isinstance(value, list):
        return encode_set(value)
    if isinstance(value, dict):
        return encode_map(value)
    return _encode_atom(value)
