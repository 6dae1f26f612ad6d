"""The rendered suricata.yaml round-trips through Suricata's own validation (suricata -T)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from appliance.config import load_settings
from appliance.errors import ConfigError
from appliance.render import RenderTarget, render_config, to_yaml
from appliance.validate import validate


def test_render_has_what_lateral_needs(tmp_path: Path, bundled_rules: Path) -> None:
    s = load_settings()
    cfg = render_config(s, RenderTarget(log_dir=tmp_path, rule_files=[bundled_rules],
                                        unix_socket=tmp_path / "s.sock"))
    text = to_yaml(cfg)
    assert text.startswith("%YAML 1.1\n---\n")
    parsed = yaml.safe_load(text.split("---\n", 1)[1])
    eve = parsed["outputs"][0]["eve-log"]
    assert eve["community-id"] == "yes"
    names = {t if isinstance(t, str) else next(iter(t)) for t in eve["types"]}
    for needed in ("alert", "flow", "http", "dns", "tls", "files", "anomaly", "dhcp", "ssh",
                   "smb", "stats"):
        assert needed in names
    assert parsed["unix-command"] == {"enabled": "yes", "filename": str(tmp_path / "s.sock")}
    assert parsed["decoder"]["vxlan"]["enabled"] is True
    assert parsed["decoder"]["geneve"]["enabled"] is True
    assert parsed["rule-files"] == [str(bundled_rules.resolve())]
    home_net = parsed["vars"]["address-groups"]["HOME_NET"]
    assert home_net == "[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]"
    assert parsed["flow-timeouts"]["tcp"]["closed"] == 60  # Suricata's own defaults
    assert parsed["flow-timeouts"]["udp"]["established"] == 300


def test_flow_timeouts_from_settings(tmp_path: Path, bundled_rules: Path) -> None:
    cfg = tmp_path / "l.yaml"
    cfg.write_text("engine:\n  flow_timeouts: {new: 5, established: 10, tcp_closed: 2}\n")
    parsed = render_config(load_settings(cfg), RenderTarget(
        log_dir=tmp_path, rule_files=[bundled_rules], unix_socket=tmp_path / "s.sock"))
    timeouts = parsed["flow-timeouts"]
    assert timeouts["udp"]["new"] == 5 and timeouts["udp"]["established"] == 10
    assert timeouts["tcp"]["closed"] == 2 and timeouts["tcp"]["emergency-closed"] == 2
    assert timeouts["tcp"]["established"] == 600  # not set: the default
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine:\n  flow_timeouts: {tcp_closed: -1}\n")
    with pytest.raises(ConfigError, match="tcp_closed"):
        load_settings(bad)


@pytest.mark.suricata
def test_rendered_config_passes_suricata_T(suricata_bin: str, bundled_rules: Path) -> None:
    report = validate(load_settings(), [bundled_rules])
    assert report.ok, report.describe()
    assert report.rule_failures == []
    assert not [w for w in report.warnings if "ignoring configuration" in w], report.warnings


@pytest.mark.suricata
def test_custom_settings_pass_suricata_T(tmp_path: Path, suricata_bin: str,
                                         bundled_rules: Path) -> None:
    cfg = tmp_path / "l.yaml"
    cfg.write_text(
        "vars:\n  address_groups:\n    HOME_NET: '[10.0.0.0/8]'\n    EXTERNAL_NET: any\n"
        "engine:\n  stream_memcap: 128mb\n  mpm_algo: hs\n"
        "  app_layer: {modbus: true, smtp: false}\n"
        "  flow_timeouts: {new: 5, established: 10, tcp_new: 5, tcp_established: 10,"
        " tcp_closed: 2}\n"
        "eve:\n  alert_payload: true\n  netflow: true\n"
    )
    report = validate(load_settings(cfg), [bundled_rules])
    assert report.ok, report.describe()


@pytest.mark.suricata
def test_invalid_rule_reported_with_file_line_sid_reason(tmp_path: Path, suricata_bin: str) -> None:
    rules = tmp_path / "local.rules"
    rules.write_text(
        'alert tcp any any -> any any (msg:"fine"; content:"abc"; sid:9000001; rev:1;)\n'
        'alert tcp any any -> any any (msg:"typo"; contnet:"abc"; sid:9000002; rev:1;)\n'
    )
    report = validate(load_settings(), [rules])
    assert not report.ok
    assert len(report.rule_failures) == 1
    failure = report.rule_failures[0]
    assert (failure.file, failure.line, failure.sid) == (str(rules), 2, 9000002)
    assert "contnet" in failure.reason


@pytest.mark.suricata
def test_invalid_setting_shows_suricata_error(tmp_path: Path, suricata_bin: str,
                                              bundled_rules: Path) -> None:
    cfg = tmp_path / "l.yaml"
    cfg.write_text("vars:\n  address_groups:\n    HOME_NET: '[10.0.0.0/33]'\n")
    report = validate(load_settings(cfg), [bundled_rules])
    assert not report.ok
    assert report.errors, report
    assert "HOME_NET" in report.describe() or "10.0.0.0/33" in report.describe()


@pytest.mark.suricata
def test_live_af_packet_config_passes_suricata_T(tmp_path: Path, suricata_bin: str,
                                                 bundled_rules: Path) -> None:
    cfg = tmp_path / "l.yaml"
    cfg.write_text("capture:\n  interface: ens5\n  threads: 2\n  cluster_type: cluster_qm\n"
                   "  bpf_filter: not port 22\n")
    settings = load_settings(cfg)
    rendered = render_config(settings, RenderTarget(log_dir=tmp_path, live=True))
    iface = rendered["af-packet"][0]
    assert (iface["interface"], iface["threads"], iface["cluster-type"]) == ("ens5", 2,
                                                                             "cluster_qm")
    assert iface["tpacket-v3"] == "yes" and iface["bpf-filter"] == "not port 22"
    assert rendered["runmode"] == "workers"
    report = validate(settings, [bundled_rules], live=True)
    assert report.ok, report.describe()


def test_live_without_interface_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="capture.interface"):
        render_config(load_settings(), RenderTarget(log_dir=tmp_path, live=True))


def test_managed_ruleset_brings_its_classification_file(tmp_path: Path,
                                                        bundled_rules: Path) -> None:
    """A source may add classtypes: the engine running the managed ruleset must name the
    classification file the store swaps with every activation, not the system's."""
    from appliance.replay import with_managed_classification

    settings = load_settings(None, state_dir=str(tmp_path))
    assert with_managed_classification(settings) == settings          # no managed ruleset yet
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "lateral.rules").write_text(bundled_rules.read_text())
    (rules / "classification.config").write_text(
        "config classification: lateral-custom,A classtype only this source has,2\n")
    managed = with_managed_classification(settings)
    assert managed.engine.classification_file == rules / "classification.config"
    rendered = render_config(managed, RenderTarget(log_dir=tmp_path,
                                                   rule_files=[rules / "lateral.rules"]))
    assert rendered["classification-file"] == str(rules / "classification.config")
    configured = load_settings(None, state_dir=str(tmp_path), rule_files=[str(bundled_rules)])
    assert with_managed_classification(configured) == configured      # explicit rules win
