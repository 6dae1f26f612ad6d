"""The OVA for vSphere users: a stream-optimized VMDK, an OVF 1.0 descriptor, a manifest.

An OVA is a tar archive whose first member is the ``.ovf`` descriptor, followed by the disk and
a ``.mf`` manifest of SHA-256 digests. The descriptor declares the appliance's conventions:
2 vCPUs, 4 GiB of memory, one disk on an LSI Logic SCSI controller, and two VMXNET3 NICs —
``management`` (first) and ``capture`` (second; connect it to the promiscuous port group that
receives the mirror). Standard library only (the image builder runs before any virtualenv).
"""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

NS = {
    "ovf": "http://schemas.dmtf.org/ovf/envelope/1",
    "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
    "vssd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
    "vmw": "http://www.vmware.com/schema/ovf",
}
REQUIRED_SECTIONS = ("References", "DiskSection", "NetworkSection", "VirtualSystem",
                     "VirtualSystem/OperatingSystemSection", "VirtualSystem/VirtualHardwareSection",
                     "VirtualSystem/ProductSection")
NETWORKS = (("management", "Management network: the API (HTTPS) and, when enabled, SSH"),
            ("capture", "Mirror/SPAN port group (promiscuous): receive-only, no address"))
CPUS, MEMORY_MIB = 2, 4096
FIRMWARE = "bios"

for prefix, uri in NS.items():
    ET.register_namespace(prefix, uri)


def _q(tag: str) -> str:
    prefix, _, name = tag.partition(":")
    return f"{{{NS[prefix]}}}{name}"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _item(parent: ET.Element, **fields: str) -> None:
    item = ET.SubElement(parent, _q("ovf:Item"))
    # rasd elements must be in alphabetical order (the CIM schema's sequence)
    for name in sorted(fields):
        ET.SubElement(item, _q(f"rasd:{name}")).text = fields[name]


def descriptor(name: str, version: str, disk_file: str, disk_file_size: int,
               capacity_bytes: int) -> bytes:
    """The OVF 1.0 envelope for the appliance."""
    env = ET.Element(_q("ovf:Envelope"))
    refs = ET.SubElement(env, _q("ovf:References"))
    ET.SubElement(refs, _q("ovf:File"), {_q("ovf:href"): disk_file, _q("ovf:id"): "file1",
                                         _q("ovf:size"): str(disk_file_size)})
    disks = ET.SubElement(env, _q("ovf:DiskSection"))
    ET.SubElement(disks, _q("ovf:Info")).text = "Virtual disk"
    ET.SubElement(disks, _q("ovf:Disk"), {
        _q("ovf:capacity"): str(capacity_bytes), _q("ovf:capacityAllocationUnits"): "byte",
        _q("ovf:diskId"): "vmdisk1", _q("ovf:fileRef"): "file1",
        _q("ovf:format"): "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"})
    nets = ET.SubElement(env, _q("ovf:NetworkSection"))
    ET.SubElement(nets, _q("ovf:Info")).text = "The appliance's two networks"
    for net, text in NETWORKS:
        n = ET.SubElement(nets, _q("ovf:Network"), {_q("ovf:name"): net})
        ET.SubElement(n, _q("ovf:Description")).text = text

    vs = ET.SubElement(env, _q("ovf:VirtualSystem"), {_q("ovf:id"): name})
    ET.SubElement(vs, _q("ovf:Info")).text = "Lateral east-west traffic inspection appliance"
    ET.SubElement(vs, _q("ovf:Name")).text = name
    ann = ET.SubElement(vs, _q("ovf:AnnotationSection"))
    ET.SubElement(ann, _q("ovf:Info")).text = "Notes"
    ET.SubElement(ann, _q("ovf:Annotation")).text = (
        "First NIC: management (DHCP or static from the cloud-init seed). Second NIC: capture — "
        "connect it to a promiscuous port group receiving the mirror. Configure with a NoCloud "
        "seed ISO labelled cidata; see the appliance README.")
    prod = ET.SubElement(vs, _q("ovf:ProductSection"))
    ET.SubElement(prod, _q("ovf:Info")).text = "Product"
    ET.SubElement(prod, _q("ovf:Product")).text = "Lateral"
    ET.SubElement(prod, _q("ovf:Vendor")).text = "Lateral"
    ET.SubElement(prod, _q("ovf:Version")).text = version
    os_ = ET.SubElement(vs, _q("ovf:OperatingSystemSection"), {_q("ovf:id"): "96",
                                                              _q("vmw:osType"): "debian12_64Guest"})
    ET.SubElement(os_, _q("ovf:Info")).text = "Debian GNU/Linux 12 (64-bit)"
    hw = ET.SubElement(vs, _q("ovf:VirtualHardwareSection"))
    ET.SubElement(hw, _q("ovf:Info")).text = "2 vCPUs, 4 GiB, one disk, two VMXNET3 NICs"
    system = ET.SubElement(hw, _q("ovf:System"))
    for tag, text in (("ElementName", "Virtual Hardware Family"), ("InstanceID", "0"),
                      ("VirtualSystemIdentifier", name), ("VirtualSystemType", "vmx-15")):
        ET.SubElement(system, _q(f"vssd:{tag}")).text = text
    _item(hw, AllocationUnits="hertz * 10^6", Description="Number of virtual CPUs",
          ElementName=f"{CPUS} virtual CPUs", InstanceID="1", ResourceType="3",
          VirtualQuantity=str(CPUS))
    _item(hw, AllocationUnits="byte * 2^20", Description="Memory size",
          ElementName=f"{MEMORY_MIB} MB of memory", InstanceID="2", ResourceType="4",
          VirtualQuantity=str(MEMORY_MIB))
    _item(hw, Address="0", Description="SCSI controller", ElementName="SCSI controller 0",
          InstanceID="3", ResourceSubType="lsilogic", ResourceType="6")
    _item(hw, AddressOnParent="0", ElementName="Hard disk 1", HostResource="ovf:/disk/vmdisk1",
          InstanceID="4", Parent="3", ResourceType="17")
    for i, (net, _) in enumerate(NETWORKS):
        _item(hw, AddressOnParent=str(7 + i), AutomaticAllocation="true", Connection=net,
              Description=f"VMXNET3 ethernet adapter on {net}", ElementName=f"{net} NIC",
              InstanceID=str(5 + i), ResourceSubType="VmxNet3", ResourceType="10")
    # The image boots with GRUB for PC BIOS: say so, or vSphere may pick EFI for a new VM.
    ET.SubElement(hw, _q("vmw:Config"), {_q("ovf:required"): "false", _q("vmw:key"): "firmware",
                                         _q("vmw:value"): FIRMWARE})
    ET.indent(env)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(env)


def build_ova(raw: Path, out: Path, name: str, version: str) -> Path:
    """Convert the raw disk to a stream-optimized VMDK and pack the OVA next to it."""
    vmdk = out / f"{name}-disk1.vmdk"
    subprocess.run(["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized",
                    str(raw), str(vmdk)], check=True, capture_output=True)
    capacity = raw.stat().st_size
    ovf_path = out / f"{name}.ovf"
    ovf_path.write_bytes(descriptor(name, version, vmdk.name, vmdk.stat().st_size, capacity))
    mf = out / f"{name}.mf"
    mf.write_text("".join(f"SHA256({p.name})= {sha256(p)}\n" for p in (ovf_path, vmdk)))
    ova = out / f"{name}.ova"
    with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member in (ovf_path, vmdk, mf):  # the descriptor must come first
            info = tar.gettarinfo(str(member), arcname=member.name)
            info.uid = info.gid = 64
            info.uname = info.gname = "someone"
            with open(member, "rb") as f:
                tar.addfile(info, f)
    for member in (ovf_path, vmdk, mf):
        member.unlink()
    return ova


def check_ova(ova: Path) -> list[str]:
    """What is wrong with an OVA (empty when valid): member order, manifest digests, the
    descriptor's XML and required sections, and the disk reference."""
    problems: list[str] = []
    with tarfile.open(ova) as tar:
        names = tar.getnames()
        if not names or not names[0].endswith(".ovf"):
            return [f"the first member must be the .ovf descriptor, not {names[:1]}"]
        members = {n: tar.extractfile(n) for n in names}
        data = {n: f.read() for n, f in members.items() if f is not None}
    root = ET.fromstring(data[names[0]])
    if root.tag != _q("ovf:Envelope"):
        problems.append(f"the root element is {root.tag}, not ovf:Envelope")
    for section in REQUIRED_SECTIONS:
        path = "/".join(f"ovf:{s}" for s in section.split("/"))
        if root.find(path, NS) is None:
            problems.append(f"missing {section}")
    for ref in root.findall("ovf:References/ovf:File", NS):
        href = ref.get(_q("ovf:href"))
        if href not in data:
            problems.append(f"References names {href}, which is not in the archive")
        elif int(ref.get(_q("ovf:size"), "-1")) != len(data[href]):
            problems.append(f"{href}: size differs from References")
    mf = [n for n in names if n.endswith(".mf")]
    if not mf:
        problems.append("no manifest")
    else:
        for line in data[mf[0]].decode().splitlines():
            algo_name, _, digest = line.partition("= ")
            member = algo_name[len("SHA256("):-1]
            if hashlib.sha256(data.get(member, b"")).hexdigest() != digest.strip():
                problems.append(f"manifest digest of {member} does not match")
    nics = [i for i in root.iterfind(".//ovf:Item", NS)
            if i.findtext("rasd:ResourceType", namespaces=NS) == "10"]
    if [n.findtext("rasd:Connection", namespaces=NS) for n in nics] != [n for n, _ in NETWORKS]:
        problems.append("the NICs must be management then capture")
    firmware = [c.get(_q("vmw:value")) for c in root.iterfind(".//vmw:Config", NS)
                if c.get(_q("vmw:key")) == "firmware"]
    if firmware != [FIRMWARE]:
        problems.append(f"the firmware must be declared {FIRMWARE} (vmw:Config), not {firmware}")
    return problems
