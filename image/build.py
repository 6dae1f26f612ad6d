#!/usr/bin/env python3
"""Build the Lateral appliance VM image: a bootable Debian 12 qcow2 and an OVA.

Run as root from the repository (loop devices, mount, chroot)::

    sudo python3 image/build.py [--out build/image] [--size 4G] [--no-ova] [--boot-check]

What it does, in order (each step's time is printed, then the image size):

1. wheels: Lateral and every runtime dependency as wheels (``pip wheel``), so the image
   installs them offline from a wheelhouse; cached under ``~/.cache/lateral/image``.
2. disk: a sparse raw disk with an MBR and one ext4 root partition, attached to a loop device.
3. base: ``debootstrap --variant=minbase`` Debian 12 into the mounted partition (packages cached).
4. packages: in a chroot, the kernel, GRUB (BIOS), systemd-networkd, cloud-init, nftables,
   OpenSSH (installed, off), unattended-upgrades (installed, off), Suricata 7 from
   bookworm-backports — with no recommended packages.
5. lateral: ``/opt/lateral`` virtualenv from the wheelhouse; the files under ``image/rootfs``
   (systemd units, firewall, network, cloud-init and hardening settings) copied in;
   ``image/provision.sh`` run inside the chroot (user, units, bootloader, clean-up).
6. outputs: ``lateral-<version>.qcow2`` (compressed), ``lateral-<version>.ova`` (stream-optimized
   VMDK + OVF descriptor + manifest), ``SHA256SUMS``, ``packages.txt`` (every Debian package and
   Python distribution with its version: what this build contains), ``security.txt`` (the
   exposure score ``systemd-analyze security`` gives each Lateral unit).

``--boot-check`` then boots the qcow2 under qemu (software emulation when KVM is absent) with a
NoCloud seed and prints the time from power-on to the API answering ``/health``.

Only the standard library: it runs with the system ``python3`` before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import ovf  # noqa: E402  (image/ovf.py, beside this file)

MIRROR = os.environ.get("LATERAL_IMAGE_MIRROR", "http://deb.debian.org/debian")
SECURITY = os.environ.get("LATERAL_IMAGE_SECURITY", "http://deb.debian.org/debian-security")
CACHE = Path(os.environ.get("LATERAL_IMAGE_CACHE",
                            Path.home() / ".cache" / "lateral" / "image"))
SUITE = "bookworm"

# Installed with --no-install-recommends; everything else the appliance runs comes from here.
PACKAGES = [
    "linux-image-amd64", "grub-pc", "initramfs-tools", "systemd-sysv", "udev", "dbus",
    "systemd-timesyncd", "iproute2", "ethtool", "nftables", "ca-certificates", "python3",
    "python3-venv", "cloud-init", "openssh-server", "unattended-upgrades", "tcpdump",
    "e2fsprogs", "kmod", "procps", "netbase", "less", "cloud-guest-utils", "sudo",
    "systemd-resolved",  # DNS servers from DHCP or the first-boot config reach resolv.conf
]
BACKPORTS = ["suricata"]
# Mounted into the chroot during the build (and left out of the cached base), with their modes.
CHROOT_MOUNTS = {"dev": 0o755, "proc": 0o555, "sys": 0o555, "var/cache/apt/archives": 0o755}


_PRIVATE_MOUNTS = "LATERAL_IMAGE_PRIVATE_MOUNTS"


class BuildError(Exception):
    """A step failed; the message says which and why."""


def say(msg: str) -> None:
    print(f"==> {msg}", file=sys.stderr, flush=True)


def run(*cmd: str | Path, env: dict[str, str] | None = None, quiet: bool = False,
        **kw: object) -> subprocess.CompletedProcess[str]:
    argv = [str(c) for c in cmd]
    kw.setdefault("stdout", subprocess.PIPE if quiet else None)
    kw.setdefault("stderr", subprocess.STDOUT if quiet else None)
    proc = subprocess.run(argv, text=True, env=env, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = (proc.stdout or "")[-3000:] if quiet else ""
        raise BuildError(f"{' '.join(argv[:6])} … exited {proc.returncode}\n{tail}")
    return proc


class Steps:
    """Times each step and prints a summary at the end."""

    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []
        self.t0 = time.monotonic()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        say(name)
        t = time.monotonic()
        yield
        self.times.append((name, time.monotonic() - t))

    def report(self) -> str:
        lines = [f"  {name:<34} {secs:7.1f} s" for name, secs in self.times]
        lines.append(f"  {'total':<34} {time.monotonic() - self.t0:7.1f} s")
        return "\n".join(lines)


def lateral_version() -> str:
    for line in (REPO / "pyproject.toml").read_text().splitlines():
        if line.startswith("version"):
            return line.split("=", 1)[1].strip().strip('"')
    raise BuildError("no version in pyproject.toml")


def build_wheels(dest: Path) -> None:
    """Lateral and its runtime dependencies as wheels (pip's cache makes repeats fast)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    py = os.environ.get("LATERAL_IMAGE_PYTHON", sys.executable)
    run(py, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
        "--wheel-dir", dest, str(REPO), quiet=True)


class Disk:
    """A raw disk image with one partition, attached to a loop device and mounted."""

    def __init__(self, path: Path, size: str, mnt: Path) -> None:
        self.path, self.size, self.mnt = path, size, mnt
        self.loop = ""
        self.part = ""
        self.root_uuid = str(uuid.uuid4())
        self.mounts: list[Path] = []

    def create(self) -> None:
        self.path.unlink(missing_ok=True)
        run("truncate", "-s", self.size, self.path)
        # MBR, one bootable Linux partition from 1 MiB to the end (GRUB's core image sits
        # in the gap before it).
        subprocess.run(["sfdisk", "--quiet", str(self.path)], input="label: dos\n"
                       "start=2048, type=83, bootable\n", text=True, check=True)
        self.loop = run("losetup", "--find", "--show", "--partscan", self.path,
                        quiet=True).stdout.strip()
        self.part = f"{self.loop}p1"
        self._ensure_partition_node()
        run("mkfs.ext4", "-q", "-L", "lateral-root", "-U", self.root_uuid,
            "-E", "lazy_itable_init=0,lazy_journal_init=0", self.part)
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.mount(self.part, self.mnt)

    def _ensure_partition_node(self) -> None:
        """Containers often lack udev: make /dev/loopNp1 from sysfs if it did not appear."""
        name = Path(self.loop).name
        sysdev = Path(f"/sys/block/{name}/{name}p1/dev")
        for attempt in range(50):
            if Path(self.part).exists():
                return
            if attempt == 10 and not sysdev.exists():
                subprocess.run(["partx", "-a", self.loop], stderr=subprocess.DEVNULL)
            if sysdev.exists():
                major, minor = sysdev.read_text().split(":")
                with contextlib.suppress(FileExistsError):  # devtmpfs may have made it
                    os.mknod(self.part, 0o600 | 0o060000, os.makedev(int(major), int(minor)))
                return
            time.sleep(0.1)
        raise BuildError(f"the partition of {self.loop} did not appear")

    def mount(self, src: str | Path, dst: Path, *opts: str) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        run("mount", *opts, src, dst)
        self.mounts.append(dst)

    def unmount_all(self) -> None:
        for m in reversed(self.mounts):
            subprocess.run(["umount", "-l" if m != self.mnt else "-R", str(m)],
                           stderr=subprocess.DEVNULL)
        self.mounts.clear()

    def detach(self) -> None:
        self.unmount_all()
        if self.loop:
            subprocess.run(["losetup", "-d", self.loop], stderr=subprocess.DEVNULL)
            self.loop = ""


def chroot(mnt: Path, *cmd: str, quiet: bool = True) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
           "LC_ALL": "C.UTF-8", "HOME": "/root"}
    run("chroot", mnt, *cmd, env=env, quiet=quiet)


def build_resolv_conf(mnt: Path) -> None:
    """The build host's resolver for apt in the chroot. The chroot's own resolv.conf may be
    a symlink to systemd-resolved's stub (an absolute path that would lead out of the chroot,
    into the host's /run): it is replaced, never written through."""
    resolv = mnt / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", resolv)


def apt_sources(mnt: Path) -> None:
    (mnt / "etc/apt/sources.list").write_text("")
    (mnt / "etc/apt/sources.list.d/debian.sources").write_text(
        f"Types: deb\nURIs: {MIRROR}\nSuites: {SUITE} {SUITE}-updates {SUITE}-backports\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        f"Types: deb\nURIs: {SECURITY}\nSuites: {SUITE}-security\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    (mnt / "etc/apt/apt.conf.d/90lateral").write_text(
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
        'Acquire::Languages "none";\n')


def base_key() -> str:
    """What the cached base depends on: the suite, mirrors and package lists (and the week, so
    a cached base is rebuilt from scratch at least weekly; updates are applied on every build)."""
    week = time.strftime("%G-W%V")
    text = "\n".join([SUITE, MIRROR, SECURITY, *PACKAGES, "--", *BACKPORTS, week, "v1"])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_base(mnt: Path, dest: Path) -> None:
    """The installed base system (before Lateral) as a zstd tarball, written atomically."""
    for old in dest.parent.glob("base-*.tar.zst"):
        old.unlink()
    tmp = dest.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        # The chroot's mounts (proc, sys, dev, the package cache) stay out; unpack_base
        # makes their mount points again.
        excludes = [f"--exclude=./{m}" for m in CHROOT_MOUNTS]
        tar = subprocess.Popen(["tar", "--numeric-owner", "--xattrs", "--acls",
                                "--one-file-system", *excludes, "-C", str(mnt), "-cf", "-",
                                "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        run("zstd", "-q", "-T0", "-3", stdin=tar.stdout, stdout=out)
        if tar.wait() != 0:
            raise BuildError("tar of the base system failed")
    os.replace(tmp, dest)


def unpack_base(src: Path, mnt: Path) -> None:
    zstd = subprocess.Popen(["zstd", "-q", "-dc", str(src)], stdout=subprocess.PIPE)
    assert zstd.stdout is not None
    run("tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "-C", mnt,
        "-xpf", "-", stdin=zstd.stdout)
    if zstd.wait() != 0:
        raise BuildError(f"{src} is corrupt: delete it and build again")
    for m, mode in CHROOT_MOUNTS.items():
        (mnt / m).mkdir(mode=mode, parents=True, exist_ok=True)
        (mnt / m).chmod(mode)


def copy_rootfs(mnt: Path) -> None:
    """The files of image/rootfs, over the image's root (modes kept, owned by root)."""
    src = HERE / "rootfs"
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        dst = mnt / rel
        if path.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dst)
        os.chown(dst, 0, 0)


def build(args: argparse.Namespace) -> int:
    out: Path = args.out.resolve()
    work = out / "work"
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(exist_ok=True)
    (CACHE / "debs").mkdir(parents=True, exist_ok=True)
    version = lateral_version()
    steps = Steps()
    raw = work / "disk.raw"
    disk = Disk(raw, args.size, work / "mnt")
    mnt = disk.mnt
    try:
        with steps.step("wheels: Lateral and its dependencies"):
            build_wheels(work / "wheels")
        with steps.step(f"disk: {args.size} raw, MBR, ext4"):
            disk.create()
        base_tar = CACHE / f"base-{base_key()}.tar.zst"
        cached = args.base_cache and base_tar.exists()
        if cached:
            with steps.step(f"base: unpack cached {base_tar.name}"):
                unpack_base(base_tar, mnt)
        else:
            with steps.step("base: debootstrap Debian 12 (minbase)"):
                run("debootstrap", "--variant=minbase", f"--cache-dir={CACHE / 'debs'}",
                    "--include=ca-certificates", SUITE, mnt, MIRROR, quiet=True)
        for fs, where, opts in (("/dev", "dev", ("--bind",)), ("/dev/pts", "dev/pts", ("--bind",)),
                                ("proc", "proc", ("-t", "proc")), ("sysfs", "sys", ("-t", "sysfs")),
                                (str(CACHE / "debs"), "var/cache/apt/archives", ("--bind",))):
            assert where.split("/")[0] in CHROOT_MOUNTS or where in CHROOT_MOUNTS
            disk.mount(fs, mnt / where, *opts)
        (mnt / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")  # no daemons now
        (mnt / "usr/sbin/policy-rc.d").chmod(0o755)
        build_resolv_conf(mnt)
        (mnt / "etc/dpkg/dpkg.cfg.d/lateral-build").write_text("force-unsafe-io\n")
        if cached:
            with steps.step("packages: security and point-release updates"):
                chroot(mnt, "apt-get", "update", "-q")
                chroot(mnt, "apt-get", "upgrade", "-y", "-q")
                chroot(mnt, "apt-get", "install", "-y", "-q", "-t", f"{SUITE}-backports",
                       *BACKPORTS)
        else:
            with steps.step("packages: kernel, cloud-init, Suricata 7 …"):
                apt_sources(mnt)
                (mnt / "etc/hostname").write_text("lateral\n")
                chroot(mnt, "apt-get", "update", "-q")
                # GRUB's debconf would ask for the boot device; provision.sh installs it.
                chroot(mnt, "sh", "-c", "echo 'grub-pc grub-pc/install_devices_empty boolean "
                                        "true' | debconf-set-selections")
                chroot(mnt, "apt-get", "install", "-y", "-q", *PACKAGES)
                build_resolv_conf(mnt)  # systemd-resolved's postinst points it at its stub
                chroot(mnt, "apt-get", "install", "-y", "-q", "-t", f"{SUITE}-backports",
                       *BACKPORTS)
            if args.base_cache:
                with steps.step(f"base: cache as {base_tar.name}"):
                    save_base(mnt, base_tar)
        with steps.step("lateral: virtualenv, units, hardening"):
            shutil.copytree(work / "wheels", mnt / "tmp/wheels")
            copy_rootfs(mnt)
            shutil.copy2(HERE / "provision.sh", mnt / "tmp/provision.sh")
            (mnt / "tmp/provision.env").write_text(
                f"LOOP={disk.loop}\nROOT_UUID={disk.root_uuid}\nLATERAL_VERSION={version}\n")
            chroot(mnt, "bash", "/tmp/provision.sh", quiet=not args.verbose)
            packages = (mnt / "tmp/packages.txt").read_text()
            (out / "packages.txt").write_text(packages)
            shutil.copyfile(mnt / "tmp/security.txt", out / "security.txt")
            for leftover in ("tmp/wheels", "tmp/provision.sh", "tmp/provision.env",
                             "tmp/packages.txt", "tmp/security.txt", "usr/sbin/policy-rc.d",
                             "etc/dpkg/dpkg.cfg.d/lateral-build"):
                p = mnt / leftover
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)
            # On the appliance, names resolve through systemd-resolved's stub, which knows the
            # DNS servers DHCP or the first-boot configuration gave the management NIC.
            resolv = mnt / "etc/resolv.conf"
            resolv.unlink(missing_ok=True)
            resolv.symlink_to("/run/systemd/resolve/stub-resolv.conf")
        with steps.step("finish: trim, unmount, fsck"):
            if shutil.which("fstrim"):
                run("fstrim", mnt, quiet=True)
            disk.unmount_all()
            run("e2fsck", "-fy", disk.part, quiet=True)
            disk.detach()
        qcow2 = out / f"lateral-{version}.qcow2"
        qcow2.unlink(missing_ok=True)
        outputs = [qcow2]
        with steps.step("qcow2" + (" and ova" if args.ova else "") + ": convert (in parallel)"), \
                concurrent.futures.ThreadPoolExecutor(2) as pool:
            jobs = [pool.submit(run, "qemu-img", "convert", "-O", "qcow2",
                                *(["-c"] if args.compress else []), raw, qcow2, quiet=True)]
            if args.ova:
                jobs.append(pool.submit(ovf.build_ova, raw, out, f"lateral-{version}", version))
            results = [j.result() for j in jobs]
        if args.ova:
            outputs.append(results[1])
        raw.unlink()
        with steps.step("checksums"):
            sums = [f"{ovf.sha256(p)}  {p.name}" for p in outputs]
            (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    except (BuildError, OSError, subprocess.CalledProcessError) as exc:
        print(f"lateral image build failed: {exc}", file=sys.stderr)
        return 1
    finally:
        disk.detach()
    print("build steps:\n" + steps.report())
    for p in outputs:
        print(f"image {p.name}: {p.stat().st_size / 2**20:.0f} MiB on disk "
              f"(virtual size {args.size})")
    print("unit exposure (systemd-analyze security; 0 safe … 10 unsafe):\n"
          + (out / "security.txt").read_text(), end="")
    print((out / "SHA256SUMS").read_text(), end="")
    if args.boot_check:
        import boot

        result = boot.boot_check(qcow2, work)
        print(f"boot: API /health answered {result.seconds_to_health:.0f} s after power-on "
              f"({result.accel})")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "build" / "image")
    p.add_argument("--size", default="4G", help="virtual disk size (default 4G)")
    p.add_argument("--no-ova", dest="ova", action="store_false", help="qcow2 only")
    p.add_argument("--no-compress", dest="compress", action="store_false",
                   help="uncompressed qcow2 (faster build, larger file)")
    p.add_argument("--no-base-cache", dest="base_cache", action="store_false",
                   help="always debootstrap; do not reuse or write the cached base system")
    p.add_argument("--boot-check", action="store_true",
                   help="boot the image under qemu and time it to API /health")
    p.add_argument("--verbose", action="store_true", help="show the chroot provisioning output")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("lateral image build needs root (loop devices, mount, chroot)", file=sys.stderr)
        return 2
    missing = [t for t in ("debootstrap", "qemu-img", "sfdisk", "losetup", "mkfs.ext4", "chroot",
                         "zstd", "unshare")
               if shutil.which(t) is None]
    if missing:
        print(f"missing tools: {', '.join(missing)} (apt-get install debootstrap qemu-utils "
              "fdisk mount e2fsprogs zstd)", file=sys.stderr)
        return 2
    if os.environ.get(_PRIVATE_MOUNTS) != "1":
        # The build's mounts (the image, /proc, /dev … in its chroot) live in a mount namespace
        # of its own: a namespace that another program creates meanwhile (`ip netns exec` makes
        # one) cannot copy them and keep the image's file system busy, and whatever a failed
        # build leaves mounted goes away with it.
        os.environ[_PRIVATE_MOUNTS] = "1"
        again = sys.argv[1:] if argv is None else argv
        os.execvp("unshare", ["unshare", "--mount", "--propagation", "private",
                              sys.executable, str(Path(__file__).resolve()), *again])
    return build(args)


if __name__ == "__main__":
    sys.exit(main())
