"""What a secure broker needs: its SCRAM users and their random passwords
(``credentials.json``, and the StorageTool ``--add-scram`` arguments that create them) and
its TLS material in ``tls/`` (a self-signed CA, a server and a client certificate signed by
it). Private files are written mode 0600."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from packetflow.localkafka.layout import (
    ADMIN_USER,
    CLIENT_USER,
    HOST,
    SCRAM_MECHANISMS,
    credentials_file,
)


def write_private(path: Path, data: str | bytes) -> None:
    """Write *path* readable by its owner only (mode 0600, also if it existed)."""
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(raw)


def read_credentials(rdir: Path) -> dict[str, str] | None:
    """``{user: password}`` from credentials.json, or None if missing or incomplete."""
    try:
        record = json.loads(credentials_file(rdir).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    users = {str(k): str(v) for k, v in record.items()}
    return users if {ADMIN_USER, CLIENT_USER} <= users.keys() else None


def new_credentials(rdir: Path) -> dict[str, str]:
    """Random passwords for the SCRAM users, saved to credentials.json (0600)."""
    # Hex only: StorageTool's --add-scram syntax has no quoting to rely on.
    credentials = {user: secrets.token_hex(16) for user in (ADMIN_USER, CLIENT_USER)}
    write_private(credentials_file(rdir), json.dumps(credentials, indent=2) + "\n")
    return credentials


def scram_args(credentials: Mapping[str, str]) -> list[str]:
    """StorageTool ``--add-scram`` args creating every user for every SCRAM mechanism."""
    args: list[str] = []
    for mech in SCRAM_MECHANISMS:
        for user, password in credentials.items():
            args += ["--add-scram", f"{mech}=[name={user},password={password}]"]
    return args


# --------------------------------------------------------------------------- tls


def ensure_tls(tls: Path) -> None:
    """Make a self-signed CA and, signed by it, a server certificate for 127.0.0.1 and
    localhost and a client certificate, unless all their files already exist. The CA key is
    not kept: nothing else is ever signed with it."""
    names = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
    if all((tls / name).is_file() for name in names):
        return
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _cert_name(f"PacketFlow local Kafka CA ({tls.parent.name})")
    ca_cert = (
        _cert_builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(sign_certs=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_sans = [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
    server = _issue(ca_key, ca_name, "localhost", ExtendedKeyUsageOID.SERVER_AUTH, server_sans)
    client = _issue(ca_key, ca_name, CLIENT_USER, ExtendedKeyUsageOID.CLIENT_AUTH, [])

    tls.mkdir(mode=0o700, parents=True, exist_ok=True)
    (tls / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for stem, (cert_pem, key_pem) in (("server", server), ("client", client)):
        (tls / f"{stem}.pem").write_bytes(cert_pem)
        write_private(tls / f"{stem}.key", key_pem)


def _cert_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PacketFlow local Kafka"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _cert_builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    """A certificate valid from yesterday for ten years, with a subject key identifier."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, sign_certs: bool) -> x509.KeyUsage:
    """Key usage of a CA (signs certificates) or of a TLS peer (signs handshakes)."""
    return x509.KeyUsage(
        digital_signature=not sign_certs,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=sign_certs,
        crl_sign=sign_certs,
        encipher_only=False,
        decipher_only=False,
    )


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    common_name: str,
    purpose: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
) -> tuple[bytes, bytes]:
    """A new key and a certificate for it signed by the CA: (cert PEM, PKCS#8 key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _cert_builder(_cert_name(common_name), ca_name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(sign_certs=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
