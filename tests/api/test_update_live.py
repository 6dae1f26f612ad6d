"""Rule updates through the API on a live appliance: ET Open from a file:// source, under traffic.

Set up as the appliance runs: one configuration file shared by ``lateral run`` (Suricata on
AF_PACKET on one end of a private veth pair, with its command socket where ``rules.unix_socket``
points) and ``lateral api serve`` (a process of its own, as ``lateral-api.service``; TLS with the
certificate it generates on first start), the first ruleset version built before the engine
starts (Lateral's bundled rules), an operator token made with ``lateral api token create``.

The module's fixture then does what automation does, over HTTPS only: while tcpreplay sends a
lab capture into the other end of the pair (``tests/rules/test_reload_live.py``'s chunks), it
registers the ET Open files as a ``file://`` source (``POST /rules/sources``), starts an update
(``POST /rules/update``: 202 and a job) and polls ``GET /jobs/{id}`` until the job is done;
traffic goes on for a few seconds after. The tests check that no packet was lost (Suricata's own
counters), that the running engine and ``GET /status`` show the version and counts the job
reported, the job's report itself (the ET Open update's duration is printed, run with ``-s``),
and that ``POST /rules/rollback`` brings the bundled version back into the engine.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.config import load_settings
from appliance.engine.socket import SuricataSocket
from appliance.live import LivePaths
from lab.scenarios import write_pcap
from rules import Updater
from rules.reload import engine_counts

from ..e2e.running import LateralRun, wait_for
from ..rules.test_reload_live import (
    AFTER_RELOAD,
    LOOPS_PER_CHUNK,
    Traffic,
    VethPair,
    _capture,
    _frames,
    _last_reload,
)
from ..shared_data import ET_OPEN
from .conftest import REPO, _free_port

pytestmark = [pytest.mark.root, pytest.mark.suricata, pytest.mark.slow,
              pytest.mark.timeout(1500)]

ET_OPEN_ACTIVE = 22_445  # ET Open's own count (SOURCE.md; tests/rules/conftest.py)
FLOWBIT_ENABLED = 130  # enabled by suricata-update for flowbit dependencies (test_et_open.py)
BUNDLED = 8
ET_OPEN_ENABLED = ET_OPEN_ACTIVE + FLOWBIT_ENABLED + BUNDLED
JOB_TIMEOUT = 900.0


def _lateral(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)


@dataclass
class Appliance:
    """The running pieces and what the update under traffic left to check."""

    state: Path
    client: httpx.Client
    socket: Path
    first_version: str
    job: dict[str, Any]
    job_seconds: float
    traffic: Traffic
    frames: int
    loaded_at_start: float
    reloaded_at: float
    job_done_at: float
    still_sending: bool
    counters: dict[str, Any]
    ruleset_stats: dict[str, Any]


def _wait_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        response = client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["state"] in ("succeeded", "failed"):
            return job
        assert time.monotonic() < deadline, f"the update job is still {job['state']}: {job}"
        time.sleep(1)


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    if os.geteuid() != 0:
        pytest.fail("live-capture tests need root (CI runs as root)")
    if not ET_OPEN.is_dir():
        pytest.fail(f"{ET_OPEN} is missing (the shared ET Open test data)")
    tmp = tmp_path_factory.mktemp("api-live")
    archive = tmp / "et-open.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for item in sorted(ET_OPEN.iterdir()):
            tar.add(item, arcname=item.name)
    tag = os.getpid() % 100000
    veth = VethPair(f"lau{tag}s", f"lau{tag}c")
    state = tmp / "state"
    paths = LivePaths(state)
    port = _free_port()
    cfg = tmp / "lateral.yaml"
    cfg.write_text(
        f"sensor: api-live\nstate_dir: {state}\n"
        f"capture:\n  interface: {veth.capture}\n"
        "output:\n  stats_every: 5\n"
        "engine:\n  stats_interval: 1\n"
        f"rules:\n  unix_socket: {paths.socket}\n"
        f"api:\n  host: 127.0.0.1\n  port: {port}\n", encoding="utf-8")
    # first boot: the first version (bundled rules) before the engine starts, an operator token
    first = Updater(load_settings(cfg)).update(why="bundled rules only, before the engine starts")
    assert first.activated and first.version, first.refused
    made = _lateral("api", "token", "create", "--config", str(cfg), "--role", "operator",
                    "--name", "automation")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    pcap = tmp / "sample.pcap"
    write_pcap("sample", pcap)

    veth.up()
    api = client = None
    api_log = (tmp / "api.log").open("wb")
    try:
        api = subprocess.Popen([sys.executable, "-m", "appliance.cli", "api", "serve",
                                "--config", str(cfg)], cwd=REPO, stdout=api_log,
                               stderr=subprocess.STDOUT)
        cert = state / "api" / "tls" / "cert.pem"
        wait_for(lambda: cert.is_file() or api.poll() is not None, 60, "the API's certificate")
        client = httpx.Client(base_url=f"https://127.0.0.1:{port}", timeout=60,
                              verify=ssl.create_default_context(cafile=str(cert)),
                              headers={"Authorization": f"Bearer {token}"})

        def answers() -> bool:
            assert api.poll() is None, (tmp / "api.log").read_text()
            try:
                return client.get("/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answers, 60, "the API to answer")
        traffic = Traffic(veth.sender, pcap)
        with LateralRun(cfg) as run:
            run.wait_started(timeout=300)
            with SuricataSocket(paths.socket, timeout=30) as sock:
                assert sock.capture_mode().startswith("AF_PACKET")
                assert engine_counts(paths.socket) == (BUNDLED, 0)
                loaded_at_start = _last_reload(sock)
                try:
                    traffic.start()
                    wait_for(lambda: traffic.chunks >= 1 or bool(traffic.errors), 120,
                             "the first tcpreplay chunk")
                    added = client.post("/rules/sources", json={
                        "name": "et-open", "location": archive.as_uri()})
                    assert added.status_code == 201, added.text
                    started = time.monotonic()
                    accepted = client.post("/rules/update", json={
                        "why": "ET Open through the API under live traffic"})
                    assert accepted.status_code == 202, accepted.text
                    assert accepted.headers["Location"] == accepted.json()["location"]
                    job = _wait_job(client, accepted.json()["job_id"])
                    job_seconds = time.monotonic() - started
                    job_done_at = time.time()
                    still_sending = traffic.running
                    time.sleep(AFTER_RELOAD)
                finally:
                    traffic.stop()

                def settled() -> bool:
                    return _capture(sock.dump_counters())[0] >= traffic.sent

                try:
                    wait_for(settled, 30, "the engine to count every packet sent")
                except AssertionError:
                    pass  # the assertions say what is missing
                time.sleep(2)
                yield Appliance(
                    state=state, client=client, socket=paths.socket,
                    first_version=first.version, job=job, job_seconds=job_seconds,
                    traffic=traffic, frames=_frames(pcap), loaded_at_start=loaded_at_start,
                    reloaded_at=_last_reload(sock), job_done_at=job_done_at,
                    still_sending=still_sending, counters=sock.dump_counters(),
                    ruleset_stats=sock.ruleset_stats()[0])
        assert run.returncode == 0, run.output
    finally:
        if client is not None:
            client.close()
        if api is not None:
            api.send_signal(signal.SIGTERM)
            try:
                api.wait(timeout=60)
            finally:
                if api.poll() is None:
                    api.kill()
                    api.wait()
        api_log.close()
        veth.down()


def test_update_job_under_live_traffic_swaps_the_set_with_no_packet_lost(
        appliance: Appliance) -> None:
    job, report = appliance.job, appliance.job["report"]
    assert job["state"] == "succeeded", job
    assert report["outcome"] == "activated", report
    assert report["previous"] == appliance.first_version != report["version"]
    # the job's progress is the update's steps, ending with the reload of the running engine
    assert [s["name"] for s in job["progress"]] == [
        "fetch", "validate", "canary", "activate", "reload"]
    assert all(s["ok"] for s in job["progress"]), job["progress"]
    # ... which now runs the version and counts the job reported
    reload = report["reload"]
    assert reload["ok"] and (reload["loaded"], reload["failed"]) == (ET_OPEN_ENABLED, 0)
    stats = appliance.ruleset_stats
    assert (int(stats["rules_loaded"]), int(stats["rules_failed"])) == (ET_OPEN_ENABLED, 0)
    assert report["counts"]["enabled"] == ET_OPEN_ENABLED
    status = appliance.client.get("/status").json()
    assert status["ruleset"]["active"] == report["version"]
    assert status["ruleset"]["counts"] == report["counts"]
    # the swap happened while tcpreplay was sending, and the job was done before it stopped
    traffic = appliance.traffic
    assert not traffic.errors, traffic.errors
    assert appliance.reloaded_at > appliance.loaded_at_start
    assert traffic.started < appliance.reloaded_at < appliance.job_done_at + 1 < traffic.ended
    assert appliance.still_sending
    # no packet lost: Suricata captured and decoded every packet tcpreplay sent
    kernel_packets, kernel_drops, decoded = _capture(appliance.counters)
    print(f"\nsent {traffic.sent} in {traffic.chunks} chunks over "
          f"{traffic.ended - traffic.started:.1f} s; kernel_packets {kernel_packets} "
          f"kernel_drops {kernel_drops} decoder.pkts {decoded}")
    assert traffic.sent == traffic.chunks * LOOPS_PER_CHUNK * appliance.frames
    assert kernel_drops == 0
    assert kernel_packets == traffic.sent
    assert decoded == traffic.sent


def test_et_open_update_from_a_file_source_through_the_api_completes(
        appliance: Appliance) -> None:
    job, report = appliance.job, appliance.job["report"]
    assert job["state"] == "succeeded" and job["error"] is None, job
    assert job["kind"] == "rules.update" and job["requested_by"] == "api:automation"
    assert [(s["name"], s["state"], s["enabled"]) for s in report["sources"]] == [
        ("et-open", "fetched", ET_OPEN_ACTIVE)]
    assert report["reload"]["loaded"] > 20_000 and report["reload"]["failed"] == 0
    assert report["rejected"] == [] and report["dropped"] == []
    assert all(c["ok"] and not c["skipped"] for c in report["canaries"]), report["canaries"]
    steps = ", ".join(f"{s['name']} {s['seconds']:.1f} s" for s in job["progress"])
    print(f"\nET Open update through the API: {report['reload']['loaded']} rules loaded, "
          f"{report['reload']['failed']} failed; job {appliance.job_seconds:.1f} s from "
          f"POST /rules/update to done (the update's own {report['seconds']:.1f} s; steps, "
          f"the canary running beside the validation: {steps})")


def test_rollback_through_the_api_restores_the_previous_version(appliance: Appliance) -> None:
    client, report = appliance.client, appliance.job["report"]
    response = client.post("/rules/rollback", json={})
    assert response.status_code == 200, response.text
    rolled = response.json()
    assert rolled["version"] == appliance.first_version, rolled
    assert rolled["reload"]["ok"], rolled
    assert (rolled["reload"]["loaded"], rolled["reload"]["failed"]) == (BUNDLED, 0)
    assert engine_counts(appliance.socket) == (BUNDLED, 0)
    status = client.get("/status").json()
    assert status["ruleset"]["active"] == appliance.first_version
    assert status["ruleset"]["counts"]["enabled"] == BUNDLED
    versions = client.get("/rules/versions").json()
    assert versions["active"] == appliance.first_version
    assert report["version"] in [v["id"] for v in versions["versions"]]  # kept, not deleted
