"""Serving the API over TLS with uvicorn.

Without a configured certificate (``api.tls_cert`` / ``api.tls_key``), a self-signed one is
generated on first start under ``<state_dir>/api/tls`` (an ECDSA P-256 key, mode 0600, valid
for ten years, naming ``localhost``, the loopback addresses and the configured host) and reused
afterwards; clients pin it (``curl --cacert``, httpx ``verify=``). With ``api.client_ca`` set,
clients must present a certificate signed by that CA (mTLS: ``ssl.CERT_REQUIRED``) in addition
to their token. :func:`build_server` returns a ``uvicorn.Server`` that a caller may run in a
thread (tests, ``lateral run``); :func:`serve` runs it in the foreground.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import ssl
from pathlib import Path

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.config import Settings
from appliance.errors import ConfigError

from .app import create_app
from .settings import ApiSettings, api_paths
from .state import ApiState

__all__ = ["build_server", "ensure_certificate", "serve"]

log = logging.getLogger("lateral.api.server")


def _write_private(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_certificate(directory: Path, host: str) -> tuple[Path, Path]:
    """The self-signed certificate and key in ``directory``, generated if missing."""
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.IPAddress(ipaddress.ip_address("::1"))]
    try:
        address = ipaddress.ip_address(host)
        if not address.is_unspecified and not address.is_loopback:
            names.append(x509.IPAddress(address))
    except ValueError:
        names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lateral-api")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    _write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()), 0o600)
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("generated a self-signed API certificate %s", cert_path)
    return cert_path, key_path


def build_server(settings: Settings, api: ApiSettings, *, host: str | None = None,
                 port: int | None = None, state: ApiState | None = None,
                 log_config: bool = True) -> uvicorn.Server:
    """A uvicorn server for the API over TLS (not started)."""
    host = host or api.host
    if (api.tls_cert is None) != (api.tls_key is None):
        raise ConfigError("api.tls_cert and api.tls_key go together: set both or neither")
    if api.tls_cert is not None and api.tls_key is not None:
        cert, key = api.tls_cert, api.tls_key
    else:
        cert, key = ensure_certificate(api_paths(settings, api).tls_dir, host)
    for path in (cert, key, api.client_ca):
        if path is not None and not path.is_file():
            raise ConfigError(f"{path}: no such file (api TLS settings)")
    app = create_app(settings, api=api, state=state)
    config = uvicorn.Config(
        app, host=host, port=port if port is not None else api.port,
        ssl_certfile=str(cert), ssl_keyfile=str(key),
        ssl_ca_certs=str(api.client_ca) if api.client_ca else None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if api.client_ca else ssl.CERT_NONE,
        server_header=False, proxy_headers=False, lifespan="on",
        log_config=uvicorn.config.LOGGING_CONFIG if log_config else None,
        timeout_graceful_shutdown=30)
    return uvicorn.Server(config)


def serve(settings: Settings, api: ApiSettings, *, host: str | None = None,
          port: int | None = None) -> None:
    """Run the API in the foreground until SIGINT/SIGTERM."""
    build_server(settings, api, host=host, port=port).run()
