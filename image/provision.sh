#!/usr/bin/env bash
# Runs inside the image's chroot (image/build.py copies it to /tmp): installs Lateral into its
# own virtualenv, creates the service user, enables exactly the services the appliance runs,
# installs the bootloader and removes what a fresh VM must not inherit (machine id, host keys).
set -euo pipefail
. /tmp/provision.env   # LOOP, ROOT_UUID, LATERAL_VERSION

# --- Lateral in /opt/lateral, offline from the build's wheelhouse --------------------------------
python3 -m venv /opt/lateral
/opt/lateral/bin/pip install --quiet --no-index --find-links /tmp/wheels --no-compile lateral
/opt/lateral/bin/python -m compileall -q /opt/lateral/lib >/dev/null || true
ln -sf /opt/lateral/bin/lateral /usr/local/bin/lateral

# --- the service user: owns the state, holds no login -------------------------------------------
if ! id lateral >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/lateral --shell /usr/sbin/nologin --user-group lateral
fi
install -d -o lateral -g lateral -m 0750 /var/lib/lateral /var/log/lateral
install -d -o root -g lateral -m 0750 /etc/lateral
chown root:lateral /etc/lateral/lateral.yaml && chmod 0640 /etc/lateral/lateral.yaml

# --- filesystems, boot ---------------------------------------------------------------------------
cat > /etc/fstab <<EOF
UUID=${ROOT_UUID}  /  ext4  defaults,errors=remount-ro  0  1
tmpfs  /tmp  tmpfs  nosuid,nodev,noexec,size=256m  0  0
EOF
grub-install --target=i386-pc --recheck "$LOOP" >/dev/null 2>&1
# grub-mkconfig writes root=UUID=… only if /dev/disk/by-uuid names the root (no udev here)
mkdir -p /dev/disk/by-uuid
ln -sf "${LOOP}p1" "/dev/disk/by-uuid/${ROOT_UUID}"
update-grub >/dev/null 2>&1
rm -f "/dev/disk/by-uuid/${ROOT_UUID}"
grep -q "root=UUID=${ROOT_UUID}" /boot/grub/grub.cfg || {
  echo "grub.cfg does not boot root=UUID=${ROOT_UUID}" >&2; exit 1; }

# --- firewall: only the API (and SSH once enabled) on the management NIC -----------------------
/opt/lateral/bin/lateral appliance firewall --management eth0 --capture eth1 --api-port 8443 > /etc/nftables.conf
chmod 0755 /etc/nftables.conf

# --- services: exactly these run ------------------------------------------------------------------
systemctl enable systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
  nftables.service \
  lateral-firstboot.service lateral.service lateral-api.service serial-getty@ttyS0.service \
  >/dev/null 2>&1
# OpenSSH is installed but off until the first-boot configuration enables it (key-only).
systemctl disable ssh.service ssh.socket >/dev/null 2>&1 || true
systemctl mask suricata.service >/dev/null 2>&1   # Lateral supervises its own Suricata
systemctl disable apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
  fstrim.timer >/dev/null 2>&1 || true             # unattended upgrades: opt-in (first boot)
systemctl disable unattended-upgrades.service >/dev/null 2>&1 || true
systemctl set-default multi-user.target >/dev/null

# --- accounts ------------------------------------------------------------------------------------
passwd --lock root >/dev/null
echo lateral > /etc/hostname

# --- what this build contains --------------------------------------------------------------------
{
  echo "# Debian packages"
  dpkg-query -W -f '${Package} ${Version}\n'
  echo "# Python distributions in /opt/lateral"
  /opt/lateral/bin/pip list --format=freeze --disable-pip-version-check
} > /tmp/packages.txt

# --- how exposed each Lateral unit is (systemd-analyze security, offline: 0 = safe … 10) --------
for unit in lateral.service lateral-api.service lateral-firstboot.service \
            lateral-rules-update.service; do
  systemd-analyze security --offline=yes --no-pager "$unit" 2>/dev/null \
    | sed -n 's/.*Overall exposure level for \([^:]*\): \([0-9.]*\) \([A-Z]*\).*/\1 \2 \3/p'
done > /tmp/security.txt

# --- nothing a fresh VM must inherit -------------------------------------------------------------
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/log/*.log /var/log/apt/* \
  /root/.cache /etc/ssh/ssh_host_*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
