"""The clinician area's storage: accounts, second factors, sessions and API tokens.

Secrets are stored only as hashes (passwords by clinician/accounts.py with argon2id,
recovery codes, session ids, API tokens) or sealed (TOTP secrets, by
clinician/second_factor.py); a TOTP step is claimed with one UPDATE, so a code is
accepted once across all processes. Login failures and
sessions live here, not in memory, so every gunicorn worker sees the same ones; the
retention purge drops stale ones. A failure is counted against the client's network,
not only its address: an IPv6 client has a whole /64 to rotate through.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime
from typing import Any

from ..localtime import iso
from .base import Concern


def client_network(ip: str) -> str:
    """What failed logins are counted against: an IPv4 address itself, an IPv6 address's
    /64 (one household or phone gets a whole /64 and could otherwise try a password from
    each of its addresses; the post limit counts the same way, web/protect.py). Counting
    per /64 counts every single address too."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


class Clinicians(Concern):
    """Read and change accounts, their second factors, sessions and API tokens."""

    _USER_COLUMNS = ("email", "password_hash", "totp_secret", "totp_last_step", "recipients",
                     "forms", "disabled_at", "last_login_at")

    def add(self, username: str, password_hash: str, *, email: str,
            recipients: list[str], forms: list[str], practice: str = "default") -> int:
        now = iso(self.clock())
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO users (username, email, password_hash, recipients, forms, "
                "practice, created_at, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (username, email, password_hash, json.dumps(recipients), json.dumps(forms),
                 practice, now, now))
            return int(cur.fetchone()[0])

    def get(self, *, username: str | None = None,
            user_id: int | None = None) -> dict[str, Any] | None:
        if username is not None:
            row = self.conn.execute("SELECT * FROM users WHERE username = ?",
                                    (username,)).fetchone()
        else:
            row = self.conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
        return dict(row) if row else None

    def rows(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM users ORDER BY username")]

    def update(self, user_id: int, **fields: Any) -> None:
        bad = set(fields) - set(self._USER_COLUMNS)
        if bad:
            raise ValueError(f"not a user column: {', '.join(sorted(bad))}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.transaction() as conn:
            conn.execute(f"UPDATE users SET {sets}, changed_at = ? WHERE id = ?",  # noqa: S608 - column names checked above
                         (*fields.values(), iso(self.clock()), user_id))

    def remove(self, user_id: int) -> None:
        """Delete a user; sessions, tokens and recovery codes go with it (cascade)."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM users WHERE id = ?", (user_id,))

    def totp_reseal(self, user_id: int, old: str, new: str) -> bool:
        """Replace a stored TOTP secret with its sealed form (only if still `old`)."""
        with self.transaction() as conn:
            cur = conn.execute("UPDATE users SET totp_secret = ? WHERE id = ? AND "
                               "totp_secret = ?", (new, user_id, old))
        return cur.rowcount == 1

    def totp_claim_step(self, user_id: int, step: int) -> bool:
        """Accept TOTP time step `step` once: False if it (or a later one) was used."""
        with self.transaction() as conn:
            cur = conn.execute("UPDATE users SET totp_last_step = ? WHERE id = ? AND "
                               "totp_last_step < ?", (step, user_id, step))
        return cur.rowcount == 1

    def recovery_codes_set(self, user_id: int, hashes: list[str]) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM recovery_codes WHERE user_id = ?", (user_id,))
            conn.executemany("INSERT INTO recovery_codes (user_id, code_hash) VALUES (?, ?)",
                             [(user_id, h) for h in hashes])

    def recovery_code_use(self, user_id: int, code_hash: str) -> bool:
        with self.transaction() as conn:
            cur = conn.execute("UPDATE recovery_codes SET used_at = ? WHERE user_id = ? AND "
                               "code_hash = ? AND used_at IS NULL",
                               (iso(self.clock()), user_id, code_hash))
        return cur.rowcount == 1

    def recovery_codes_left(self, user_id: int) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM recovery_codes WHERE user_id = ? "
                                     "AND used_at IS NULL", (user_id,)).fetchone()[0])

    # login failures: counted in the database so every worker process sees them
    def login_failure(self, username: str, ip: str) -> None:
        """Count a failed login step of `username` (a tag) from `ip`; the `ip` column
        holds the client's network (`client_network`)."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO login_failures (at, username, ip) VALUES (?, ?, ?)",
                         (iso(self.clock()), username, client_network(ip)))

    def login_failures(self, since: datetime, *, username: str | None = None,
                       ip: str | None = None) -> int:
        """Failed steps since `since` of one name tag, or from `ip`'s network."""
        col, value = ("username", username) if username is not None else \
            ("ip", client_network(ip or ""))
        return int(self.conn.execute(
            f"SELECT COUNT(*) FROM login_failures WHERE {col} = ? AND at >= ?",  # noqa: S608 - fixed names
            (value, iso(since))).fetchone()[0])

    def login_failures_clear(self, username: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM login_failures WHERE username = ?", (username,))

    # server-side sessions (the cookie holds a random id; only its hash is stored)
    def session(self, sid_hash: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM sessions WHERE sid_hash = ?",
                                (sid_hash,)).fetchone()
        return dict(row) if row else None

    def session_save(self, sid_hash: str, user_id: int | None, created_at: datetime,
                     seen_at: datetime, data: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO sessions (sid_hash, user_id, created_at, seen_at, data) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (sid_hash) DO UPDATE SET "
                "user_id = excluded.user_id, seen_at = excluded.seen_at, data = excluded.data",
                (sid_hash, user_id, iso(created_at), iso(seen_at), json.dumps(data)))

    def session_delete(self, sid_hash: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE sid_hash = ?", (sid_hash,))

    def sessions_end(self, user_id: int) -> int:
        with self.transaction() as conn:
            return conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,)).rowcount

    # API tokens (only a hash is stored; the token is shown once)
    def token_add(self, user_id: int, name: str, token_hash: str, hint: str) -> int:
        with self.transaction() as conn:
            cur = conn.execute("INSERT INTO api_tokens (user_id, name, token_hash, hint, "
                               "created_at) VALUES (?, ?, ?, ?, ?) RETURNING id",
                               (user_id, name, token_hash, hint, iso(self.clock())))
            return int(cur.fetchone()[0])

    def tokens(self, user_id: int) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT id, name, hint, created_at, last_used_at, revoked_at "
                                "FROM api_tokens WHERE user_id = ? ORDER BY id", (user_id,))
        return [dict(r) for r in cur]

    def token_owner(self, token_hash: str) -> tuple[int, int] | None:
        """(token id, user id) of a token that is not revoked, marking it used now."""
        with self.transaction() as conn:
            row = conn.execute("SELECT id, user_id FROM api_tokens WHERE token_hash = ? "
                               "AND revoked_at IS NULL", (token_hash,)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?",
                         (iso(self.clock()), row[0]))
        return int(row[0]), int(row[1])

    def token_revoke(self, user_id: int, token_id: int | None = None) -> int:
        """Revoke one of the user's tokens (or all of them); returns how many."""
        sql = "UPDATE api_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL"
        args: list[Any] = [iso(self.clock()), user_id]
        if token_id is not None:
            sql += " AND id = ?"
            args.append(token_id)
        with self.transaction() as conn:
            return conn.execute(sql, args).rowcount

    def purge(self, idle_before: datetime,
              failures_before: datetime) -> int:
        with self.transaction() as conn:
            n = conn.execute("DELETE FROM sessions WHERE seen_at < ?",
                             (iso(idle_before),)).rowcount
            conn.execute("DELETE FROM login_failures WHERE at < ?", (iso(failures_before),))
        return n
