"""The browser reader's storage: invitations and the keys clinicians make in the browser.

An invitation is kept only as the hash of its link secret, with its expiry and the moment
it was used; using it is one UPDATE (`invitation_use`), so a link works once across all
processes. A reader key row holds what the server may hold: the public key, and the
private key twice, each copy locked in the browser (by the reader's passphrase, and by
the recovery key printed on the recovery sheet), neither of which the server ever
receives. A key is `pending` until the clinician confirmed the recovery sheet, `active`
while it is the recipient's key for new submissions, and `retired` after a key change
(kept, so older submissions stay readable). An account's role (an assistant triages the
list but never fetches content) and the name of who handles a held submission live here
too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..localtime import iso
from .base import Concern


class Readers(Concern):
    """Invitations and browser-made reader keys (new tables: 0110-0129), and the
    readers a practice owner added to or took off a form (0220)."""

    # -- invitations ------------------------------------------------------------------
    def add_invitation(self, user_id: int, token_hash: str, expires_at: datetime) -> int:
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO invitations (user_id, token_hash, created_at, expires_at) "
                "VALUES (?, ?, ?, ?) RETURNING id",
                (user_id, token_hash, iso(self.clock()), iso(expires_at)))
            return int(cur.fetchone()[0])

    def invitation(self, token_hash: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM invitations WHERE token_hash = ?",
                                (token_hash,)).fetchone()
        return dict(row) if row else None

    def use_invitation(self, invitation_id: int) -> bool:
        """Mark an invitation used: False if it was used before (by another request)."""
        with self.transaction() as conn:
            cur = conn.execute("UPDATE invitations SET used_at = ? WHERE id = ? AND "
                               "used_at IS NULL", (iso(self.clock()), invitation_id))
        return cur.rowcount == 1

    def end_invitations(self, user_id: int) -> int:
        """Every open invitation of a user stops working (a new one was sent)."""
        with self.transaction() as conn:
            return conn.execute("UPDATE invitations SET used_at = ? WHERE user_id = ? AND "
                                "used_at IS NULL", (iso(self.clock()), user_id)).rowcount

    # -- reader keys ------------------------------------------------------------------
    def add_key(self, user_id: int, fingerprint: str, public_key: str,
                locked_key: str, recovery_locked_key: str) -> int:
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO reader_keys (user_id, fingerprint, public_key, locked_key, "
                "recovery_locked_key, state, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?) "
                "RETURNING id",
                (user_id, fingerprint, public_key, locked_key, recovery_locked_key,
                 iso(self.clock())))
            return int(cur.fetchone()[0])

    def keys(self, user_id: int) -> list[dict[str, Any]]:
        """A user's keys, newest first."""
        cur = self.conn.execute("SELECT * FROM reader_keys WHERE user_id = ? ORDER BY id DESC",
                                (user_id,))
        return [dict(r) for r in cur]

    def set_key_state(self, key_id: int, state: str, *, was: str) -> bool:
        column = {"active": "activated_at", "retired": "retired_at"}[state]
        with self.transaction() as conn:
            cur = conn.execute(
                f"UPDATE reader_keys SET state = ?, {column} = ? WHERE id = ? "  # noqa: S608 - fixed names
                "AND state = ?", (state, iso(self.clock()), key_id, was))
        return cur.rowcount == 1

    def relock_key(self, key_id: int, locked_key: str) -> None:
        """A new passphrase: the private key locked again in the browser replaces the
        old locked copy (the recovery copy stays)."""
        with self.transaction() as conn:
            conn.execute("UPDATE reader_keys SET locked_key = ? WHERE id = ?",
                         (locked_key, key_id))

    def active_keys(self) -> list[dict[str, Any]]:
        """Every active key with its user's recipients (the relay pins these)."""
        cur = self.conn.execute(
            "SELECT k.id, k.user_id, k.fingerprint, k.public_key, u.recipients, u.username, "
            "u.practice FROM reader_keys k JOIN users u ON u.id = k.user_id "
            "WHERE k.state = 'active' AND u.disabled_at IS NULL ORDER BY k.id")
        return [dict(r) for r in cur]

    # -- a form's readers, as the practice owner chose them --------------------------------
    def of_forms(self, practice: str) -> list[dict[str, Any]]:
        """The owner's changes to the readers of the practice's forms: rows of
        (form_id, recipient, kind "add" | "remove", changed_by, changed_at)."""
        cur = self.conn.execute("SELECT form_id, recipient, kind, changed_by, changed_at "
                                "FROM form_readers WHERE practice = ? ORDER BY form_id, "
                                "recipient", (practice,))
        return [dict(r) for r in cur]

    def set_on_form(self, practice: str, form_id: str, recipient: str, kind: str | None,
                        changed_by: str) -> None:
        """Record `kind` for this recipient of the form; None: back to the configuration."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM form_readers WHERE practice = ? AND form_id = ? AND "
                         "recipient = ?", (practice, form_id, recipient))
            if kind is not None:
                conn.execute("INSERT INTO form_readers (practice, form_id, recipient, kind, "
                             "changed_by, changed_at) VALUES (?, ?, ?, ?, ?, ?)",
                             (practice, form_id, recipient, kind, changed_by,
                              iso(self.clock())))

    # -- roles and triage -------------------------------------------------------------
    def role_of(self, user_id: int) -> str:
        """"reader" unless the account was given another role ("assistant")."""
        row = self.conn.execute("SELECT role FROM user_roles WHERE user_id = ?",
                                (user_id,)).fetchone()
        return str(row[0]) if row else "reader"

    def set_role(self, user_id: int, role: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM user_roles WHERE user_id = ?", (user_id,))
            if role != "reader":
                conn.execute("INSERT INTO user_roles (user_id, role) VALUES (?, ?)",
                             (user_id, role))

    def set_triage(self, reference: str, handler: str, noted_by: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM triage WHERE reference = ?", (reference,))
            if handler:
                conn.execute("INSERT INTO triage (reference, handler, noted_by, noted_at) "
                              "VALUES (?, ?, ?, ?)",
                              (reference, handler, noted_by, iso(self.clock())))

    def triage_of(self, references: list[str]) -> dict[str, str]:
        if not references:
            return {}
        marks = ", ".join("?" * len(references))
        cur = self.conn.execute(f"SELECT reference, handler FROM triage "  # noqa: S608 - placeholders only
                                f"WHERE reference IN ({marks})", references)
        return {str(r[0]): str(r[1]) for r in cur}
