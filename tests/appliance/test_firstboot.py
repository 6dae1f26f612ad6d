"""First boot of the appliance VM (``lateral appliance firstboot``) against a scratch root.

The system commands it runs (nft, networkctl, systemctl) are recorded instead of run: these tests
cover what is written and validated; tests/image boots the real image, where they run for real.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from api.tokens import TokenStore
from appliance.errors import ConfigError
from appliance.firstboot import Layout, apply, main, read_seed, render_firewall

REPO = Path(__file__).resolve().parents[2]
IMAGE_CONFIG = REPO / "image" / "rootfs" / "etc" / "lateral" / "lateral.yaml"
TOKEN = "lat_0123456789ab_" + "s3cret-" * 6


@pytest.fixture
def root(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path)
    layout.config.parent.mkdir(parents=True)
    shutil.copy(IMAGE_CONFIG, layout.config)
    return layout


def tokens(layout: Layout) -> TokenStore:
    """The token store as the appliance has it (/var/lib/lateral, under the scratch root)."""
    return TokenStore(layout / "var/lib/lateral/api/tokens.json")


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: object) -> None:
        self.calls.append(list(argv))  # type: ignore[call-overload]


def seed_file(tmp_path: Path, section: object) -> Path:
    path = tmp_path / "cloud-config.txt"
    path.write_text("#cloud-config\n" + yaml.safe_dump({"ssh_authorized_keys": ["ssh-ed25519 A"],
                                                        "lateral": section}))
    return path


def test_seeded_boot_applies_es_token_static_address_and_ssh(root: Layout, tmp_path: Path) -> None:
    seed = read_seed(seed_file(tmp_path, {
        "admin_token": TOKEN, "ssh": True,
        "management": {"address": "192.0.2.10/24", "gateway": "192.0.2.1", "dns": ["192.0.2.53"]},
        "config": {"sensor": "hv07-lateral", "es": {"url": "https://es.example:9200",
                                                    "api_key": "k"}}}))
    assert seed is not None
    run = Recorder()
    outcome = apply(seed, root, run=run)

    written = yaml.safe_load(root.config.read_text())
    assert written["sensor"] == "hv07-lateral"
    assert written["es"]["url"] == "https://es.example:9200"
    assert written["capture"]["interface"] == "eth1"          # the image default survives
    record = tokens(root).verify(TOKEN)
    assert record is not None and record.role.value == "admin"
    assert TOKEN.split("_")[2] not in tokens(root).path.read_text()
    mgmt = (root / "etc/systemd/network/10-mgmt.network").read_text()
    assert "Address=192.0.2.10/24" in mgmt and "Gateway=192.0.2.1" in mgmt
    assert "DHCP" not in mgmt
    firewall = (root / "etc/nftables.conf").read_text()
    assert "tcp dport { 22, 8443 }" in firewall
    assert ["systemctl", "enable", "--now", "ssh.service"] in run.calls
    assert outcome.generated_token is None and root.marker.exists()


def test_no_seed_means_safe_defaults_and_a_token_on_the_console_only(
        root: Layout, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    (root / "dev").mkdir()
    root.console.write_text("")                       # stands for /dev/console
    before = root.config.read_text()
    assert main(root, tmp_path / "absent.txt", run=Recorder()) == 0

    assert root.config.read_text() == before           # nothing from a seed
    console = root.console.read_text()
    token = console.split("API admin token (shown once): ")[1].split()[0]
    record = tokens(root).verify(token)
    assert record is not None and record.role.value == "admin"
    assert token not in capsys.readouterr().out and token not in caplog.text
    assert "DHCP=yes" in (root / "etc/systemd/network/10-mgmt.network").read_text()
    assert "tcp dport { 8443 }" in (root / "etc/nftables.conf").read_text()
    assert "safe defaults" in console


def test_second_boot_keeps_the_token(root: Layout, tmp_path: Path) -> None:
    (root / "dev").mkdir()
    root.console.write_text("")
    assert main(root, tmp_path / "absent.txt", run=Recorder()) == 0
    first = root.console.read_text()
    root.marker.unlink()                                 # even if run again
    assert main(root, tmp_path / "absent.txt", run=Recorder()) == 0
    assert root.console.read_text().count("shown once") == first.count("shown once") == 1


@pytest.mark.parametrize("section, message", [
    ({"config": {"capture": {"ring_size": 3}}}, "capture.ring_size"),
    ({"config": {"state_dir": "/tmp/x"}}, "state_dir is fixed"),
    ({"admin_token": "not-a-token"}, "lat_<12 hex digits>"),
    ({"management": {"address": "300.1.1.1/24"}}, "management.address"),
    ({"sssh": True}, "sssh"),
])
def test_invalid_seed_is_reported_and_defaults_stay(root: Layout, tmp_path: Path,
                                                   section: dict[str, object],
                                                   message: str) -> None:
    (root / "dev").mkdir()
    root.console.write_text("")
    before = root.config.read_text()
    code = main(root, seed_file(tmp_path, section), run=Recorder())
    console = root.console.read_text()
    assert code == 1
    assert message in console
    assert root.config.read_text() == before
    assert not root.marker.exists()                      # the next boot tries again
    assert "API admin token" in console                  # still reachable


def test_capture_and_management_must_differ(root: Layout, tmp_path: Path) -> None:
    seed = read_seed(seed_file(tmp_path, {"config": {"capture": {"interface": "eth0"}}}))
    with pytest.raises(ConfigError, match="both eth0"):
        apply(seed, root, run=Recorder())


def test_cloud_config_without_lateral_section_is_no_seed(tmp_path: Path) -> None:
    path = tmp_path / "cc.txt"
    path.write_text("#cloud-config\nhostname: x\n")
    assert read_seed(path) is None
    path.write_text("{unbalanced")
    with pytest.raises(ConfigError, match="not YAML"):
        read_seed(path)


@pytest.mark.parametrize("ssh", [False, True])
def test_firewall_is_valid_nftables(ssh: bool, tmp_path: Path) -> None:
    nft = shutil.which("nft")
    if nft is None:
        pytest.fail("nft is not installed: run scripts/setup")
    ruleset = tmp_path / "fw.nft"
    ruleset.write_text(render_firewall(management="eth0", capture="eth1", api_port=8443, ssh=ssh))
    out = subprocess.run([nft, "-c", "-f", str(ruleset)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
