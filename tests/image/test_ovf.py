"""The OVA packaging on a small disk (no image build): what ``check_ova`` accepts and what it
names as wrong — the checks the VM-image test then applies to the real OVA."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "image"))
import ovf  # noqa: E402


@pytest.fixture()
def ova(tmp_path: Path) -> Path:
    raw = tmp_path / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(8 << 20)
        f.write(b"\x55\xaa" * 256)
    return ovf.build_ova(raw, tmp_path, "lateral-test", "0.0.1")


def _rewrite(ova: Path, change: dict[str, bytes], order: list[str] | None = None) -> None:
    """Replace members of the archive (and optionally reorder them)."""
    with tarfile.open(ova) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    members.update(change)
    with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in order or list(members):
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            tar.addfile(info, io.BytesIO(members[name]))


def _descriptor(ova: Path) -> tuple[str, bytes]:
    with tarfile.open(ova) as tar:
        name = next(n for n in tar.getnames() if n.endswith(".ovf"))
        return name, tar.extractfile(name).read()  # type: ignore[union-attr]


def test_a_built_ova_is_valid_and_declares_bios_firmware(ova: Path) -> None:
    assert ovf.check_ova(ova) == []
    with tarfile.open(ova) as tar:
        names = tar.getnames()
    assert names[0].endswith(".ovf") and names[1].endswith(".vmdk") and names[2].endswith(".mf")
    _, text = _descriptor(ova)
    assert b'vmw:key="firmware" vmw:value="bios"' in text


def test_a_descriptor_without_firmware_is_refused(ova: Path) -> None:
    name, text = _descriptor(ova)
    _rewrite(ova, {name: text.replace(b'vmw:value="bios"', b'vmw:value="efi"')})
    problems = ovf.check_ova(ova)
    assert any("firmware must be declared bios" in p for p in problems), problems
    assert any("manifest digest" in p for p in problems), problems   # and the digest is off


def test_swapped_nics_are_named(ova: Path) -> None:
    name, text = _descriptor(ova)
    swapped = (text.replace(b">management<", b">@@<").replace(b">capture<", b">management<")
               .replace(b">@@<", b">capture<"))
    _rewrite(ova, {name: swapped})
    assert "the NICs must be management then capture" in ovf.check_ova(ova)


def test_a_descriptor_that_is_not_first_is_named(ova: Path) -> None:
    with tarfile.open(ova) as tar:
        names = tar.getnames()
    _rewrite(ova, {}, order=[names[1], names[0], names[2]])
    problems = ovf.check_ova(ova)
    assert len(problems) == 1 and "first member must be the .ovf descriptor" in problems[0]
