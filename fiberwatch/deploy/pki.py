"""An EC (P-256) certificate authority and the broker/client certificates it signs.

Private keys are written 0600 and never overwritten silently: an existing CA is reused, so
re-running the generator for a new gateway keeps every installed certificate valid.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fiberwatch.deploy.passwd import write_private

CA_DAYS = 3650
LEAF_DAYS = 825


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fiberwatch"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    write_private(path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode())


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _load(files: CertFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey), f"{files.key}: not an EC key"
    return cert, key


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey,
             days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days)))


def ensure_ca(files: CertFiles, name: str = "fiberwatch CA", rotate: bool = False) -> CertFiles:
    """Create the CA unless it exists (`rotate` replaces it: every certificate must follow)."""
    if files.cert.exists() and files.key.exists() and not rotate:
        return files
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(name, _name(name), key, CA_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    _write_key(files.key, key)
    _write_cert(files.cert, cert)
    return files


def issue(ca: CertFiles, out: CertFiles, subject: str, *, server_names: tuple[str, ...] = (),
          days: int = LEAF_DAYS) -> CertFiles:
    """A leaf certificate signed by `ca`: a server certificate when `server_names` are given
    (each a DNS name or an IP address, put in subjectAltName), else a client certificate."""
    ca_cert, ca_key = _load(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    b = (_builder(subject, ca_cert.subject, key, days)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if server_names:
        alt = [_alt_name(n) for n in server_names]
        b = (b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                            critical=False))
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
    _write_key(out.key, key)
    _write_cert(out.cert, b.sign(ca_key, hashes.SHA256()))
    return out


def _alt_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def ensure_issued(ca: CertFiles, out: CertFiles, subject: str, *,
                  server_names: tuple[str, ...] = (), rotate: bool = False) -> CertFiles:
    """`issue` unless `out` exists and was signed by this CA."""
    if out.cert.exists() and out.key.exists() and not rotate:
        cert = x509.load_pem_x509_certificate(out.cert.read_bytes())
        try:
            cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert.read_bytes()))
            return out
        except (ValueError, TypeError, InvalidSignature):
            pass  # signed by an older CA: issue again
    return issue(ca, out, subject, server_names=server_names)
