"""The shared client factory over TLS, and with a password from the environment."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge_agent.config import GatewayConfig
from edge_agent.store_forward import Outbox
from edge_agent.uplink import Uplink
from fiberwatch.services import Mosquitto

pytestmark = pytest.mark.integration


def _write_pki(d: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1."""
    now = dt.datetime.now(dt.UTC)

    def cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
             signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(issuer).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key, srv_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fw-test-ca")])
    ca = cert("fw-test-ca", ca_key, ca_name, ca_key, True)
    srv = cert("127.0.0.1", srv_key, ca_name, ca_key, False)
    paths = d / "ca.pem", d / "server.pem", d / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(srv_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    return paths


class _Seen(logging.Handler):
    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle, self.hit = needle, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.hit.set()


@pytest.mark.parametrize("password", ["pw-from-env", "wrong"])
def test_uplink_over_tls_with_password_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    ca, crt, key = _write_pki(tmp_path)
    pwfile = tmp_path / "passwd"
    pwfile.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(pwfile), "gw1", "pw-from-env"], check=True)
    conf = (f"cafile {ca}\ncertfile {crt}\nkeyfile {key}\n"
            f"password_file {pwfile}\nallow_anonymous false\n")
    monkeypatch.setenv("FW_TEST_BROKER_PW", password)
    refused = _Seen("uplink connect refused")
    monkeypatch.setattr(logging.getLogger("edge_agent.uplink"), "handlers", [refused])
    with Mosquitto(tmp_path / "m", extra_conf=conf) as broker, \
            Outbox(tmp_path / "o.db", max_events=10, max_age_s=60) as ob:
        cfg = GatewayConfig.model_validate({
            "gateway": {"site": "s1", "id": "g1", "data_dir": str(tmp_path)},
            "broker": {"port": broker.port, "tls": True, "ca_file": str(ca),
                       "username": "gw1", "password_env": "FW_TEST_BROKER_PW"},
            "model": {"allow_unsigned": True},
            "streams": [{"kind": "dts", "channels": 8, "sample_rate_hz": 1, "window_s": 10,
                         "hop_s": 5}],
        })
        up = Uplink(cfg, ob, reconnect_delay_s=(0.05, 0.5))
        up.start()
        try:
            if password == "wrong":
                assert refused.hit.wait(20)
                assert not up.stats["connected"]
            else:
                assert up.wait_connected(20)
        finally:
            up.stop()
