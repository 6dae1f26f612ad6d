"""Serving: mTLS, the 500 problem, and ``lateral api serve`` as a process (first-start cert)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI

from api.settings import ApiSettings

from .conftest import REPO, Server, _free_port, assert_problem


def _cert(name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None),
                           critical=True)
            .sign(issuer_key, hashes.SHA256()))
    return cert, key


def _pem(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> Path:
    data = cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    path.write_bytes(data)
    return path


def test_mutual_tls(start_server: Callable[..., Server], tmp_path: Path) -> None:
    ca, ca_key = _cert("test-ca", None)
    client_cert, client_key = _cert("automation", (ca.subject, ca_key))
    ca_file = _pem(tmp_path / "ca.pem", ca, None)
    client_pem = _pem(tmp_path / "client.pem", client_cert, client_key)
    server = start_server(ApiSettings(client_ca=ca_file), state_dir=tmp_path / "state")
    headers = {"Authorization": f"Bearer {server.tokens['analyst']}"}
    context = ssl.create_default_context(cafile=str(server.cert))
    context.load_cert_chain(str(client_pem))
    with httpx.Client(base_url=server.url, verify=context, headers=headers) as client:
        assert client.get("/status").status_code == 200
    bare = ssl.create_default_context(cafile=str(server.cert))
    with httpx.Client(base_url=server.url, verify=bare, headers=headers) as client, \
            pytest.raises(httpx.TransportError):
        client.get("/status")


def test_unexpected_errors_are_500_without_internals(
        start_server: Callable[..., Server], tmp_path: Path) -> None:
    def boom(app: FastAPI) -> None:
        @app.get("/boom")
        def _boom() -> None:
            raise RuntimeError("secret internals /etc/shadow")

    server = start_server(state_dir=tmp_path, prepare=boom)
    with server.client("admin") as client:
        p = assert_problem(client.get("/boom"), 500)
    assert "secret" not in str(p) and "RuntimeError" not in str(p)


def test_lateral_api_serve_process(tmp_path: Path) -> None:
    port = _free_port()
    cfg = tmp_path / "lateral.yaml"
    cfg.write_text(f"state_dir: {tmp_path}\napi:\n  port: {port}\n")
    main = ("import argparse, sys; from api.cli import register; p = argparse.ArgumentParser();"
            " register(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    proc = subprocess.Popen([sys.executable, "-c", main, "api", "serve", "--config", str(cfg)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        cert = tmp_path / "api" / "tls" / "cert.pem"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            if cert.is_file():
                try:
                    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as c:
                        r = c.get(f"https://localhost:{port}/health")
                    break
                except httpx.TransportError:
                    pass
            assert time.monotonic() < deadline, "lateral api serve did not come up"
            time.sleep(0.1)
        assert r.json() == {"status": "ok"}
        assert oct((tmp_path / "api" / "tls" / "key.pem").stat().st_mode & 0o777) == "0o600"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal it caught (exit by SIGTERM).
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert b"Application shutdown complete" in out
