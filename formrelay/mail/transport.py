"""Hand finished mail to the relay: SMTP with mandatory TLS, or a folder of .eml files.

`open_transport(settings)` gives the file sink when `smtp.sink_dir` is set, else an
`SmtpSession` that connects with implicit TLS or STARTTLS and verifies the relay's
certificate (system CAs plus `smtp.ca_file`). There is no fallback to plaintext: a
relay that does not offer STARTTLS gets nothing, not even MAIL FROM. Plain SMTP is
possible only with `security = "none"`, which config.py allows for loopback relays only.
Every network step has the configured timeout. Failures come out as `TransportError`
(the relay cannot be used now: try every message later), its kind `RelayRefused` (the
relay refuses formrelay itself, e.g. 530 5.7.0 at MAIL FROM: a configuration problem,
not the message's, so every message waits until it is fixed) or `Rejected` (this
message was refused; permanent for 5xx). Error texts hold host, port and SMTP codes only,
never the server's free text, which may echo an address. Large messages are streamed
(`mime.Streamed`), so memory stays bounded whatever the attachment size.
"""

from __future__ import annotations

import logging
import os
import re
import smtplib
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

from ..errors import OperatorError
from ..settings import Settings
from .mime import Streamed

log = logging.getLogger("formrelay.mailer")

Message = bytes | Streamed
KEEPALIVE_SECONDS = 10.0


class MailError(OperatorError):
    """A mail could not be handed over. `error_class` is a short, stable description
    (shown by `formrelay outbox`, `check` and /healthz); str() adds host and codes."""

    permanent = False

    def __init__(self, error_class: str, detail: str = ""):
        super().__init__(f"{error_class} ({detail})" if detail else error_class)
        self.error_class = error_class


class TransportError(MailError):
    """The relay cannot be used right now (unreachable, no TLS, bad certificate, login
    refused, connection lost): nothing more can be sent on this connection."""


class RelayRefused(TransportError):
    """The relay refuses formrelay's own session, whatever the message: 5xx to MAIL FROM
    (sender not allowed, authentication required) or 530 (authentication required) at
    any stage. The relay or [smtp] is misconfigured; no message is at fault, so none is
    failed: all wait (with backoff) and go once it is fixed."""


def smtp_codes(code: int, reply: bytes | str) -> str:
    """The code and the enhanced status ("530 5.7.0"); never the free text, which may
    echo an address."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    enhanced = re.match(r"\s*([245]\.\d{1,3}\.\d{1,3})", text)
    return f"{code} {enhanced.group(1)}" if enhanced else str(code)


class Rejected(MailError):
    """The relay refused this one message: permanent for 5xx, temporary for 4xx."""

    def __init__(self, code: int, reply: bytes | str, stage: str):
        codes = smtp_codes(code, reply)
        kind = "refused permanently" if code >= 500 else "deferred by the relay"
        super().__init__(f"{kind} at {stage}", codes)
        self.code = code
        self.permanent = code >= 500


def transport_configured(settings: Settings) -> bool:
    """True if mail can leave at all (a relay host or a sink folder is configured)."""
    return settings.smtp.configured


def open_transport(settings: Settings) -> FileSink | SmtpSession:
    if settings.sink_path is not None:
        return FileSink(settings.sink_path)
    if settings.smtp.host:
        return SmtpSession(settings)
    raise TransportError("no mail relay configured", "set [smtp] host")


def tls_context(settings: Settings) -> ssl.SSLContext:
    """Certificate and host name verified; TLS 1.2 at least; `ca_file` trusted too."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.smtp.ca_file:
        path = settings.resolve(settings.smtp.ca_file)
        try:
            ctx.load_verify_locations(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            raise TransportError("CA file unreadable", f"{path}: {exc}") from None
    return ctx


# -- writing a message on the wire -------------------------------------------------------
class _WireWriter:
    """Takes message bytes in any chunking and passes on whole CRLF lines, dot-stuffed
    for SMTP's DATA if asked; calls `keepalive` every few seconds of a long send."""

    def __init__(self, out: Callable[[bytes], Any], *, dot_stuff: bool,
                 keepalive: Callable[[], Any] | None = None):
        self._out = out
        self._dots = dot_stuff
        self._rest = b""
        self._keepalive = keepalive
        self._last = time.monotonic()
        self.size = 0

    def _emit(self, lines: bytes) -> None:
        data = lines.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if self._dots:  # `lines` starts at a line start
            data = (b"." if data.startswith(b".") else b"") + data.replace(b"\n.", b"\n..")
        self._out(data)
        self.size += len(data)
        if self._keepalive and time.monotonic() - self._last > KEEPALIVE_SECONDS:
            self._keepalive()
            self._last = time.monotonic()

    def write(self, chunk: bytes) -> int:
        data = self._rest + bytes(chunk)
        cut = data.rfind(b"\n") + 1
        self._rest = data[cut:]
        if cut:
            self._emit(data[:cut])
        return len(chunk)

    def finish(self) -> None:
        if self._rest:
            self._emit(self._rest + b"\n")
            self._rest = b""

    def write_message(self, message: Message) -> None:
        if isinstance(message, bytes):
            self.write(message)
        else:
            message.write(cast(IO[bytes], self))
        self.finish()


def write_eml(message: Message, dest: IO[bytes],
              keepalive: Callable[[], Any] | None = None) -> None:
    """`message` as an .eml file holds it: CRLF line ends throughout (gpg writes LF)."""
    _WireWriter(dest.write, dot_stuff=False, keepalive=keepalive).write_message(message)


class _Coalesce:
    """Gathers small writes into ~64 KB ones."""

    LIMIT = 1 << 16

    def __init__(self, send: Callable[[bytes], Any]):
        self._send = send
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        if len(self._buf) + len(data) > self.LIMIT:
            self.flush()
        if len(data) >= self.LIMIT:
            self._send(data)
        else:
            self._buf += data

    def flush(self) -> None:
        if self._buf:
            self._send(bytes(self._buf))
            self._buf.clear()


def message_size(message: Message) -> int:
    return len(message) if isinstance(message, bytes) else message.size


# -- the file sink -----------------------------------------------------------------------
class FileSink:
    """Writes each message as `<name>.eml` (written aside, synced, then renamed, so a
    reader never sees half a file; a re-send replaces the file with the same name)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def describe(self) -> str:
        return f"mail folder {self.folder}"

    def send(self, sender: str, recipients: tuple[str, ...], message: Message, *, name: str,
             keepalive: Callable[[], Any] | None = None) -> dict[str, str]:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name) or "mail"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{safe}.{os.getpid()}.part"
            with tmp.open("wb") as fh:
                write_eml(message, fh, keepalive)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.folder / f"{safe}.eml")
        except OSError as exc:
            raise TransportError("mail folder not writable", f"{self.folder}: {exc}") from None
        return {}

    def close(self) -> None:
        pass


# -- SMTP --------------------------------------------------------------------------------
class SmtpSession:
    """One connection to the relay, opened on first use and reused for several mails."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.smtp = settings.smtp
        self._conn: smtplib.SMTP | None = None
        self.tls_version = ""

    def describe(self) -> str:
        return f"relay {self.smtp.host}:{self.smtp.port}"

    def _fail(self, error_class: str, detail: str = "") -> TransportError:
        self.close()
        where = f"{self.smtp.host}:{self.smtp.port}"
        return TransportError(error_class, f"{where}: {detail}" if detail else where)

    def connect(self) -> smtplib.SMTP:
        if self._conn is not None:
            return self._conn
        s, timeout = self.smtp, float(self.smtp.timeout_seconds)
        try:
            ctx = tls_context(self.settings) if s.security != "none" else None
            conn: smtplib.SMTP
            if s.security == "tls":
                conn = smtplib.SMTP_SSL(s.host, s.port, timeout=timeout, context=ctx)
            else:
                conn = smtplib.SMTP(s.host, s.port, timeout=timeout)
            self._conn = conn
            conn.ehlo()
            if s.security == "starttls":
                if not conn.has_extn("starttls"):
                    raise self._fail("relay does not offer STARTTLS",
                                     "nothing was sent; the relay must offer TLS")
                conn.starttls(context=ctx)
                conn.ehlo()
            sock = conn.sock
            self.tls_version = (sock.version() or "") if isinstance(sock, ssl.SSLSocket) else ""
            if s.username:
                conn.login(s.username, s.password)
        except TransportError:
            raise
        except ssl.SSLCertVerificationError as exc:
            raise self._fail("relay certificate not trusted",
                             exc.verify_message or "verification failed") from None
        except ssl.SSLError as exc:
            raise self._fail("TLS handshake failed", exc.reason or type(exc).__name__) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise self._fail("relay refused the login", str(exc.smtp_code)) from None
        except smtplib.SMTPResponseException as exc:
            raise self._fail("relay refused the connection", str(exc.smtp_code)) from None
        except smtplib.SMTPServerDisconnected:
            raise self._fail("relay closed the connection") from None
        except smtplib.SMTPException as exc:
            raise self._fail("relay error", type(exc).__name__) from None
        except TimeoutError:
            raise self._fail("relay timed out") from None
        except OSError as exc:
            raise self._fail("relay unreachable", exc.strerror or type(exc).__name__) from None
        return conn

    def send(self, sender: str, recipients: tuple[str, ...], message: Message, *, name: str = "",
             keepalive: Callable[[], Any] | None = None) -> dict[str, str]:
        """Send one message; returns the recipients the relay refused (address -> codes)
        when it accepted the others. Raises Rejected or TransportError."""
        conn = self.connect()
        try:
            return self._transaction(conn, sender, recipients, message, keepalive)
        except (Rejected, TransportError):
            raise
        except TimeoutError:
            raise self._fail("relay timed out", "during the mail transaction") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise self._fail("relay connection lost", type(exc).__name__) from None

    def _transaction(self, conn: smtplib.SMTP, sender: str, recipients: tuple[str, ...],
                     message: Message, keepalive: Callable[[], Any] | None) -> dict[str, str]:
        options = []
        if conn.has_extn("size"):
            options.append(f"SIZE={message_size(message)}")
        if not all(a.isascii() for a in (sender, *recipients)):
            if not conn.has_extn("smtputf8"):
                raise Rejected(553, "5.6.7", "RCPT (non-ASCII address, no SMTPUTF8)")
            options += ["SMTPUTF8", "BODY=8BITMIME"]
        code, reply = conn.mail(sender, options)
        if code != 250:
            if code >= 500:  # the sender or the session is refused, not this message
                raise self._refused(code, reply, "MAIL FROM")
            self._reset(conn)
            raise Rejected(code, reply, "MAIL FROM")
        refused: dict[str, tuple[int, bytes]] = {}
        for rcpt in recipients:
            code, reply = conn.rcpt(rcpt)
            if code == 530:  # "authentication required": no recipient will do better
                raise self._refused(code, reply, "RCPT TO")
            if code not in (250, 251):
                refused[rcpt] = (code, reply)
        temporary = [r for r in refused.values() if r[0] < 500]
        if temporary or len(refused) == len(recipients):
            self._reset(conn)  # all later, together: no recipient gets it twice
            code, reply = temporary[0] if temporary else next(iter(refused.values()))
            raise Rejected(code, reply, "RCPT TO")
        conn.putcmd("data")
        code, reply = conn.getreply()
        if code != 354:
            self._reset(conn)
            raise Rejected(code, reply, "DATA")
        # Few large writes, the final dot with the last one: small trailing writes
        # would wait on the relay's delayed ACK (Nagle) for every message.
        out = _Coalesce(conn.send)
        _WireWriter(out.write, dot_stuff=True, keepalive=keepalive).write_message(message)
        if keepalive:
            keepalive()  # the relay may take a while to answer the final dot
        out.write(b".\r\n")
        out.flush()
        code, reply = conn.getreply()
        if code != 250:
            raise Rejected(code, reply, "end of DATA")
        return {addr: str(Rejected(c, r, "RCPT TO")) for addr, (c, r) in refused.items()}

    def _refused(self, code: int, reply: bytes, stage: str) -> RelayRefused:
        self.close()
        where = f"{self.smtp.host}:{self.smtp.port}"
        return RelayRefused(f"relay refuses formrelay's mail at {stage}",
                            f"{where}: {smtp_codes(code, reply)}; check [smtp] username, "
                            "FORMRELAY_SMTP_PASSWORD and from_address")

    def _reset(self, conn: smtplib.SMTP) -> None:
        try:
            conn.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            conn.close()


def probe(settings: Settings) -> str:
    """Connect, negotiate TLS, verify the certificate (and log in), then quit; a line
    for `formrelay check`. Raises TransportError with the reason."""
    transport = open_transport(settings)
    if isinstance(transport, FileSink):
        return f"mail is written to {transport.folder} (sink_dir), not sent"
    try:
        transport.connect()
        s = settings.smtp
        tls = f"{transport.tls_version}, certificate verified" if transport.tls_version \
            else "no TLS (loopback relay)"
        return f"relay {s.host}:{s.port} ({s.security}): {tls}"
    finally:
        transport.close()
