"""The public form's protection storage: used form tokens and rate-limit counters.

Both live in the database, not in memory, so every gunicorn worker process refuses the
same replayed token (one INSERT decides) and counts against the same limits
(intake/ratelimit.py). Counters are written without fsync: losing one to a power cut only
lets a few more requests through.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from .base import Concern

# A counter's hit when no live window was found: a new window, or (another process just
# started one) a hit on it. One statement decides, so concurrent first hits all count.
_UPSERT = ("INSERT INTO rate_limits (key, count, expires_at) VALUES (?, ?, ?) "
           "ON CONFLICT (key) DO UPDATE SET "
           "count = CASE WHEN rate_limits.expires_at > ? "
           "THEN rate_limits.count + excluded.count ELSE excluded.count END, "
           "expires_at = CASE WHEN rate_limits.expires_at > ? "
           "THEN rate_limits.expires_at ELSE excluded.expires_at END RETURNING count")


class FormProtection(Concern):
    """Replay protection for form tokens; fixed-window counters."""

    def use_token(self, token_id: str, expires_at: datetime) -> bool:
        """Record that a form token was posted; False if it was posted before (a replay).
        One INSERT decides, so two processes cannot both accept the same token. Called
        inside the submission's transaction, it commits with it (one fsync a post)."""
        now = self.clock().timestamp()
        with self.transaction() as conn:
            conn.execute("DELETE FROM used_form_tokens WHERE expires_at <= ?", (now,))
            cur = conn.execute("INSERT INTO used_form_tokens (id, expires_at) "
                               "VALUES (?, ?) ON CONFLICT DO NOTHING",
                               (token_id, expires_at.timestamp()))
        return cur.rowcount == 1

    def token_used(self, token_id: str) -> bool:
        """Was this form token posted before? A read only: the post's own transaction
        records it (`use_form_token`), and that INSERT is what decides."""
        row = self.conn.execute("SELECT 1 FROM used_form_tokens WHERE id = ?",
                                (token_id,)).fetchone()
        return row is not None

    def hit(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add `amount` to a fixed-window counter that expires `expiry` seconds after its
        first hit; returns the new count. One statement decides (an expired window
        starts again), so processes hitting at once on any engine count every hit."""
        now = self.clock().timestamp()
        with self.transaction(relaxed=True) as conn:
            row = conn.execute("UPDATE rate_limits SET count = count + ? WHERE key = ? AND "
                               "expires_at > ? RETURNING count", (amount, key, now)).fetchone()
            if row is not None:
                return int(row[0])
            conn.execute("DELETE FROM rate_limits WHERE expires_at <= ?", (now,))
            row = conn.execute(_UPSERT, (key, amount, now + expiry, now, now)).fetchone()
        return int(row[0])

    def hit_limits(self, hits: Sequence[tuple[str, float, int]]) -> tuple[int, float] | None:
        """Count one post against several fixed-window limits `(key, expiry, amount)`, in
        their order, in one transaction (one commit, not one per counter); stops at the
        first limit the post goes over, as flask-limiter does, so a refused post does not
        use up the later (wider) limits. Returns that limit's index and when its window
        ends (Unix seconds), or None when the post is within every limit.

        Holding several counters, a PostgreSQL transaction can meet another in a deadlock
        (the sweep of expired windows may touch a row the other holds): it is then rolled
        back whole and run again (`retried`)."""

        def hit() -> tuple[int, float] | None:
            now = self.clock().timestamp()
            with self.transaction(relaxed=True) as conn:
                for i, (key, expiry, amount) in enumerate(hits):
                    row = conn.execute("UPDATE rate_limits SET count = count + 1 WHERE "
                                       "key = ? AND expires_at > ? RETURNING count, expires_at",
                                       (key, now)).fetchone()
                    if row is None:
                        conn.execute("DELETE FROM rate_limits WHERE expires_at <= ?", (now,))
                        row = conn.execute(_UPSERT + ", expires_at",
                                           (key, 1, now + expiry, now, now)).fetchone()
                    if int(row[0]) > amount:
                        return i, float(row[1])
            return None

        return self.store.retried(hit)

    def counter(self, key: str) -> tuple[int, float]:
        """A counter's value and expiry (Unix seconds); (0, now) when it has none."""
        now = self.clock().timestamp()
        row = self.conn.execute("SELECT count, expires_at FROM rate_limits WHERE key = ? AND "
                                "expires_at > ?", (key, now)).fetchone()
        return (int(row[0]), float(row[1])) if row else (0, now)

    def clear_counters(self, key: str | None = None) -> int:
        """Drop one counter, or all of them; returns how many were dropped."""
        with self.transaction(relaxed=True) as conn:
            if key is None:
                cur = conn.execute("DELETE FROM rate_limits")
            else:
                cur = conn.execute("DELETE FROM rate_limits WHERE key = ?", (key,))
        return cur.rowcount
