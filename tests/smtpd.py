"""A real SMTP server on 127.0.0.1 for the tests: aiosmtpd with STARTTLS (or implicit
TLS, or none), using certificates made here with `cryptography` - a test CA that the
config trusts through smtp.ca_file, a server certificate for 127.0.0.1 and localhost
signed by it, and an untrusted one signed by another CA. The handler records every
command and message and can refuse, or stall on DATA, to play a misbehaving relay.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST = "127.0.0.1"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA formrelay is told to trust (smtp.ca_file)
    cert: Path  # server certificate signed by that CA
    key: Path
    untrusted_cert: Path  # server certificate signed by a CA nobody trusts
    untrusted_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _server(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate,
            ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder().subject_name(_name("localhost"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(IPv4Address(HOST))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def _write(path: Path, key: ec.EllipticCurvePrivateKey | None, cert: x509.Certificate) -> Path:
    if key is not None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    else:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def make_tls_files(root: Path) -> TlsFiles:
    ca_key, ca = _ca("formrelay test CA")
    key, cert = _server(ca_key, ca)
    other_ca_key, other_ca = _ca("some other CA")
    ukey, ucert = _server(other_ca_key, other_ca)
    return TlsFiles(ca=_write(root / "ca.pem", None, ca),
                    cert=_write(root / "server.pem", None, cert),
                    key=_write(root / "server.key", key, cert),
                    untrusted_cert=_write(root / "untrusted.pem", None, ucert),
                    untrusted_key=_write(root / "untrusted.key", ukey, ucert))


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    at: float = field(default_factory=time.monotonic)  # when the server accepted it

    def parsed(self) -> EmailMessage:
        msg = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class Recorder:
    """The handler: records commands and messages; can refuse or stall."""

    messages: list[Received] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    mail_reply: str = ""  # if set, the reply to every MAIL FROM (a misconfigured relay)
    rcpt_reply: dict[str, str] = field(default_factory=dict)  # address -> reply
    data_reply: dict[str, str] = field(default_factory=dict)  # address -> reply to DATA
    # Stall the next DATA (after recording it) until this event is set.
    stall: threading.Event | None = None
    data_started: threading.Event = field(default_factory=threading.Event)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        self.commands.append("MAIL")
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        self.commands.append("RCPT")
        if address in self.rcpt_reply:
            return self.rcpt_reply[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.commands.append("DATA")
        self.data_started.set()
        for rcpt in envelope.rcpt_tos:
            if rcpt in self.data_reply:
                return self.data_reply[rcpt]
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                      envelope.original_content,
                                      server.transport.get_extra_info("ssl_object") is not None))
        stall, self.stall = self.stall, None
        if stall is not None:
            while not stall.is_set():
                await asyncio.sleep(0.05)
        return "250 2.0.0 accepted"

    def by_message_id(self) -> dict[str, list[Received]]:
        out: dict[str, list[Received]] = {}
        for m in self.messages:
            out.setdefault(str(m.parsed()["Message-ID"]), []).append(m)
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


@contextmanager
def smtp_server(tls: TlsFiles, *, mode: str = "starttls", trusted: bool = True,
                port: int | None = None, handler: Recorder | None = None,
                ) -> Iterator[tuple[Recorder, int]]:
    """Run a server until the block ends. mode: starttls | tls | plain (no STARTTLS)."""
    handler = handler or Recorder()
    port = port or free_port()
    cert, key = (tls.cert, tls.key) if trusted else (tls.untrusted_cert, tls.untrusted_key)
    kwargs: dict[str, Any] = {"data_size_limit": 80 * 1024 * 1024}
    if mode == "starttls":
        kwargs.update(tls_context=_server_context(cert, key), require_starttls=True)
    elif mode == "tls":
        kwargs["ssl_context"] = _server_context(cert, key)
    controller = Controller(handler, hostname=HOST, port=port, **kwargs)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def smtp_config(tls: TlsFiles, port: int, *, security: str = "starttls",
                **extra: Any) -> dict[str, Any]:
    """The [smtp] table that points formrelay at such a server."""
    return {"host": HOST, "port": port, "security": security, "ca_file": str(tls.ca),
            "from_address": "formulieren@praktijk.test", "timeout_seconds": 5, **extra}
