"""The admission webhook's serving certificate, one for every replica.

Every replica serves the webhook (peering decides only who reconciles), and the API server checks
them all against one `caBundle`. So the certificate and its CA live in one Secret in the
operator's namespace: the first replica to start creates it, the others read it, and every
replica writes the same `caBundle` into the webhook configuration, which therefore never flips
between them.
"""

from __future__ import annotations

import base64
import datetime
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sidecar_operator.kube.client import ApiError, KubeApi

VALIDITY = datetime.timedelta(days=3650)  # no rotation yet: delete the Secret to renew it
FILES = ("ca.crt", "tls.crt", "tls.key")


def generate(service: str, namespace: str) -> dict[str, bytes]:
    """A CA and a serving certificate for the Service's DNS names, as PEM, keyed as a Secret."""
    now = datetime.datetime.now(datetime.UTC)

    def certificate(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
        )

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    # Common names are at most 64 characters; the DNS names go into the SANs.
    ca_name, host = "sidecar-operator webhook CA", f"{service}.{namespace}.svc"
    ca = (
        certificate(ca_name, ca_key, ca_name)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    names = [service, f"{service}.{namespace}", host, f"{host}.cluster.local"]
    serving = (
        certificate(service[:64], key, ca_name)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return {
        "ca.crt": ca.public_bytes(pem),
        "tls.crt": serving.public_bytes(pem),
        "tls.key": key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    }


async def prepare(
    api: KubeApi, *, namespace: str, secret: str, service: str, configuration: str | None
) -> Path:
    """The shared certificate in a directory for the webhook server (created in the Secret if
    this is the first replica), with its CA written into the webhook configuration."""
    data = await api.get_secret(namespace, secret)
    if data is None:
        try:
            await api.create_secret(namespace, secret, generate(service, namespace))
        except ApiError as error:
            if error.status != 409:  # another replica created it first: take that one
                raise
        data = await api.get_secret(namespace, secret)
    if data is None or not all(name in data for name in FILES):
        raise ApiError(500, f"Secret {namespace}/{secret} lacks {', '.join(FILES)}")
    directory = Path(tempfile.mkdtemp(prefix="webhook-"))
    for name in FILES:
        (directory / name).write_bytes(data[name])
    (directory / "tls.key").chmod(0o600)
    if configuration:
        ca = base64.b64encode(data["ca.crt"]).decode()
        await api.set_webhook_ca(configuration, ca)
    return directory
