from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import STOCK_ADDRESS_GROUPS, load_settings
from appliance.errors import ConfigError


def test_defaults_are_stock_rule_vars() -> None:
    s = load_settings()
    assert s.vars.address_groups == STOCK_ADDRESS_GROUPS
    assert s.vars.port_groups["HTTP_PORTS"] == "80"
    assert s.eve.community_id is True


def test_yaml_overrides_merge_with_stock(tmp_path: Path) -> None:
    cfg = tmp_path / "lateral.yaml"
    cfg.write_text(
        "sensor: hv01-sensor\n"
        "vars:\n  address_groups:\n    HOME_NET: '[10.0.0.0/24]'\n    EXTERNAL_NET: any\n"
        "inventory:\n  - name: web01\n    macs: ['52-54-00-AA-BB-01']\n    ips: [10.0.0.10]\n"
    )
    s = load_settings(cfg)
    assert s.sensor == "hv01-sensor"
    assert s.vars.address_groups["HOME_NET"] == "[10.0.0.0/24]"
    assert s.vars.address_groups["EXTERNAL_NET"] == "any"
    assert s.vars.address_groups["DNS_SERVERS"] == "$HOME_NET"  # untouched stock entry
    assert s.inventory[0].macs == ("52:54:00:aa:bb:01",)


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "lateral.yaml"
    cfg.write_text("engine:\n  stats_interval: 30\n")
    monkeypatch.setenv("LATERAL_ENGINE__STATS_INTERVAL", "5")
    monkeypatch.setenv("LATERAL_SENSOR", "from-env")
    s = load_settings(cfg)
    assert s.engine.stats_interval == 5
    assert s.sensor == "from-env"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("engine:\n  stream_memcap: lots\n", "engine.stream_memcap"),
        ("inventory:\n  - name: x\n    ips: [10.0.0.300]\n", "not an IP address"),
        ("inventory:\n  - name: x\n    macs: [zz]\n", "not a MAC address"),
        ("bogus_key: 1\n", "bogus_key"),
        ("vars:\n  port_groups:\n    bad-name: '80'\n", "not a valid rule variable"),
        ("- a\n- b\n", "must be a mapping"),
        ("engine: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_gives_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert needle in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml")
