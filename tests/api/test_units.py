"""The pieces without a server: tokens, the limiter, Prometheus text, settings, the CLI."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

import orjson
import pytest

from api._prometheus import MetricsText
from api.audit import AuthLimiter
from api.cli import register
from api.settings import load_config
from api.tokens import Role, TokenStore
from appliance.errors import ConfigError


def test_token_store(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "api" / "tokens.json")
    record, token = store.create("ci", Role.operator)
    assert store.verify(token) == record
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    raw = store.path.read_text()
    assert token.split("_", 2)[2] not in raw and record.hash in raw
    prefix, token_id, secret = token.split("_", 2)
    for wrong in (f"{prefix}_{token_id}_{secret}x", f"{prefix}_{'0' * 12}_{secret}", "nope",
                  f"lat_{token_id}_", token.upper(), f"lat_{token_id}_{'a' * 200}"):
        assert store.verify(wrong) is None
    assert store.revoke(record.id) is not None and store.revoke(record.id) is None
    assert store.verify(token) is None
    assert store.list()[0].revoked and not store.list()[0].hash
    assert not list(store.path.parent.glob(".*tmp"))
    with pytest.raises(ConfigError):
        store.create("", Role.admin)


def test_limiter_refills() -> None:
    now = [0.0]
    limiter = AuthLimiter(6, clock=lambda: now[0])  # one attempt back every 10 s
    for _ in range(6):
        assert limiter.blocked("a") == 0
        limiter.failed("a")
    assert limiter.blocked("a") == pytest.approx(10.0)
    assert limiter.blocked("b") == 0
    now[0] = 10.0
    assert limiter.blocked("a") == 0


def test_prometheus_text() -> None:
    m = MetricsText()
    m.add_tree("suricata", {"capture": {"kernel_packets": 10, "kernel-drops": 0},
                            "flag": True, "name": "x", "memuse": 1.5})
    m.add("lateral_rules", 3, labels={"kind": 'a"b'}, help_text="rules")
    assert m.render().splitlines() == [
        "# HELP lateral_rules rules", "# TYPE lateral_rules gauge",
        'lateral_rules{kind="a\\"b"} 3',
        "# TYPE suricata_capture_kernel_drops untyped", "suricata_capture_kernel_drops 0",
        "# TYPE suricata_capture_kernel_packets untyped", "suricata_capture_kernel_packets 10",
        "# TYPE suricata_memuse untyped", "suricata_memuse 1.5",
    ]


def test_load_config_reads_the_api_section(tmp_path: Path) -> None:
    cfg = tmp_path / "lateral.yaml"
    cfg.write_text(f"state_dir: {tmp_path}\napi:\n  port: 9443\n  client_ca: /x/ca.pem\n")
    settings, api = load_config(cfg)
    assert settings.state_dir == tmp_path and api.port == 9443
    assert api.client_ca == Path("/x/ca.pem")
    cfg.write_text("api:\n  prot: 1\n")
    with pytest.raises(ConfigError, match="api.prot"):
        load_config(cfg)
    cfg.write_text(f"state_dir: {tmp_path}\n")
    assert load_config(cfg)[1].port == 8443


def test_cli_bootstrap_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "lateral.yaml"
    cfg.write_text(f"state_dir: {tmp_path}\n")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        code: int = args.func(args)
        return code

    assert run("api", "token", "create", "--role", "admin", "--name", "bootstrap",
               "--config", str(cfg)) == 0
    token = capsys.readouterr().out.strip()
    store = TokenStore(tmp_path / "api" / "tokens.json")
    record = store.verify(token)
    assert record is not None and record.role is Role.admin
    assert run("api", "token", "list", "--config", str(cfg)) == 0
    listing = capsys.readouterr().out
    assert record.id in listing and token not in listing
    assert run("api", "token", "revoke", record.id, "--config", str(cfg)) == 0
    with pytest.raises(ConfigError):
        run("api", "token", "revoke", record.id, "--config", str(cfg))
    assert orjson.loads(store.path.read_bytes())["tokens"][0]["revoked"]
