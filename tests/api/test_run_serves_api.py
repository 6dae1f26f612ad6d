"""``lateral run --api``: the live appliance serves its control API from the same process —
over TLS, with tokens, and with the running engine's own status and counters."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ..e2e.running import LateralRun, wait_for
from ..rules.test_reload_live import VethPair
from .conftest import REPO, _free_port

pytestmark = [pytest.mark.root, pytest.mark.suricata, pytest.mark.slow]


def test_lateral_run_serves_the_api_with_live_engine_status(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("live-capture tests need root (CI runs as root)")
    tag = os.getpid() % 100000
    veth = VethPair(f"lra{tag}s", f"lra{tag}c")
    state = tmp_path / "state"
    port = _free_port()
    cfg = tmp_path / "lateral.yaml"
    cfg.write_text(f"sensor: run-api\nstate_dir: {state}\n"
                   f"capture:\n  interface: {veth.capture}\n"
                   "engine:\n  stats_interval: 1\n"
                   f"api:\n  host: 127.0.0.1\n  port: {port}\n", encoding="utf-8")
    made = subprocess.run([sys.executable, "-m", "appliance.cli", "api", "token", "create",
                           "--config", str(cfg), "--role", "analyst", "--name", "reader"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    veth.up()
    try:
        run = LateralRun(cfg, "--api")
        try:
            run.wait_started()
            wait_for(lambda: "control API on https://127.0.0.1" in run.output
                     or run.returncode is not None, 120, "the API to start")
            cert = state / "api" / "tls" / "cert.pem"
            with httpx.Client(base_url=f"https://127.0.0.1:{port}", timeout=30,
                              verify=ssl.create_default_context(cafile=str(cert))) as client:
                assert client.get("/health").status_code == 200
                assert client.get("/status").status_code == 401
                auth = {"Authorization": f"Bearer {token}"}

                def engine_counts() -> bool:
                    body = client.get("/status", headers=auth).json()
                    return bool(body["engine"].get("counters"))

                wait_for(engine_counts, 60, "the engine's counters in /status")
                status = client.get("/status", headers=auth).json()
                assert status["sensor"] == "run-api"
                assert status["engine"]["available"] is True
                assert "kernel_packets" in status["engine"]["counters"]["capture"]
                assert client.get("/health/ready", headers=auth).status_code == 200
                time.sleep(0.5)
        finally:
            run.stop()
        assert run.returncode == 0, run.output
        # the API went with the appliance
        with pytest.raises(httpx.TransportError):
            httpx.get(f"https://127.0.0.1:{port}/health", verify=False, timeout=5)
    finally:
        veth.down()


def test_an_api_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("live-capture tests need root (CI runs as root)")
    import socket

    tag = os.getpid() % 100000
    veth = VethPair(f"lrb{tag}s", f"lrb{tag}c")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    cfg = tmp_path / "lateral.yaml"
    cfg.write_text(f"sensor: run-api\nstate_dir: {tmp_path / 'state'}\n"
                   f"capture:\n  interface: {veth.capture}\n"
                   f"api:\n  host: 127.0.0.1\n  port: {busy.getsockname()[1]}\n",
                   encoding="utf-8")
    veth.up()
    try:
        proc = subprocess.run([sys.executable, "-m", "appliance.cli", "run", "--config",
                               str(cfg), "--api"], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
    finally:
        veth.down()
        busy.close()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "the control API did not start" in proc.stderr
    assert "Traceback" not in proc.stderr
