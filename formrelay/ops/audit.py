"""Reading the audit log (NEN 7513): verify its chain, export one submission's history.

Each row holds the hash of the row before it and its own hash over its id and fields
(store.audit_hash), so a changed row no longer matches its hash, a row inserted or
deleted in the middle breaks the link, and a gap in the ids names what is missing. The
database keeps the last id and hash ever written (`audit_head`), so a cut-off tail shows
too, and the retention purge records an anchor (the last purged id and hash, confirmed
by an "audit purged" event in the chain) from which the remaining rows verify. Someone
able to rewrite the whole file can recompute everything; `verify` prints the head so an
operator can keep it elsewhere and compare. `formrelay check` and /healthz verify
incrementally: from the last verified row (recorded in `audit_verified`) on; the whole
check also holds the chain to that recorded row, and neither moves it past a problem.
Each practice has its own chain (ids, head, anchors, verified point): `verify` checks
one practice's, or every practice's one after another.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..store import DEFAULT_PRACTICE, GENESIS, Store, audit_hash

HEADER = ("time (UTC)", "action", "outcome", "actor", "access point", "form", "detail")
MAX_PROBLEMS = 50


@dataclass
class Verification:
    rows: int = 0
    first_id: int = 0
    head_id: int = 0
    head_hash: str = GENESIS
    problems: list[str] = field(default_factory=list)
    since_id: int = 0  # incremental: rows up to this one were verified before
    since_at: str = ""
    practices: list[str] = field(default_factory=list)  # the chains checked

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        elif len(self.problems) == MAX_PROBLEMS:
            self.problems.append("... more problems not shown")


def verify(store: Store, *, incremental: bool = False, record: bool = False,
           practice: str | None = None) -> Verification:
    """Check one practice's chain, or (None) every practice's: the counts add up, each
    problem names its practice (but the default one's), the head is the default
    practice's (or the one asked for). See `verify_chain`."""
    names = [practice] if practice else store.audit.practices()
    if len(names) == 1:
        return verify_chain(store, incremental=incremental, record=record, practice=names[0])
    result = Verification(practices=names)
    for name in names:
        one = verify_chain(store, incremental=incremental, record=record, practice=name)
        result.rows += one.rows
        for problem in one.problems:
            result.add(problem if name == DEFAULT_PRACTICE else f"practice {name}: {problem}")
        if name == DEFAULT_PRACTICE:
            result.first_id, result.head_id, result.head_hash = \
                one.first_id, one.head_id, one.head_hash
            result.since_id, result.since_at = one.since_id, one.since_at
    return result


def verify_chain(store: Store, *, incremental: bool = False, record: bool = False,
                 practice: str = DEFAULT_PRACTICE) -> Verification:
    """Check the chain; `problems` says, row by row, what does not fit. The whole chain,
    or (`incremental`) only the rows after the last verified one, plus that this row is
    unchanged and the rows before it are all still there: fast on a log of years. A
    change to an older row that leaves its hash as it was is only seen by the whole
    check (`formrelay audit verify`). Both check the recorded row's hash, so a chain
    rewritten and recomputed behind it fails either way. With `record`, how far a good
    chain verified is remembered for the next incremental check (never after a problem)."""
    with store.snapshot():  # one consistent view while the service keeps writing
        result = _verify(store, incremental, practice)
        anchor = store.audit.anchor(practice)
    if record and result.ok and result.head_id:
        store.audit.record_verified(result.head_id, result.head_hash,
                                    anchor["id"] if anchor else 0, practice)
    return result


def _verify(store: Store, incremental: bool, practice: str) -> Verification:
    result = Verification(practices=[practice])
    result.head_id, result.head_hash = store.audit.head(practice)
    anchor = store.audit.anchor(practice)
    expect_id = anchor["upto_id"] + 1 if anchor else 1
    prev = anchor["upto_hash"] if anchor else GENESIS
    anchor_confirmed = anchor is None
    done = store.audit.verified(practice)
    if done and done["upto_id"] >= expect_id:
        # Both checks hold the chain to the recorded point: a rewrite that recomputed every
        # hash from some row on is consistent in itself, and only this hash still shows it.
        row = store.audit.row(done["upto_id"], practice)
        if row is None or row["hash"] != done["upto_hash"] or \
                audit_hash(row["prev_hash"], row) != row["hash"]:
            result.add(f"row #{done['upto_id']}, verified on {done['at'][:10]}, was changed or "
                       "deleted since (or a row before it, and the chain was recomputed)")
    if incremental and done and done["upto_id"] >= expect_id:
        purged_upto = expect_id - 1
        if store.audit.count(-1, purged_upto, practice) or \
                store.audit.count(purged_upto, done["upto_id"], practice) != \
                done["upto_id"] - purged_upto:
            result.add(f"rows up to #{done['upto_id']}, verified on {done['at'][:10]}, were "
                       "deleted or inserted since; run `formrelay audit verify`")
        if anchor is not None and anchor["id"] == done["anchor_id"]:
            anchor_confirmed = True  # it was in force then, and confirmed then
        expect_id, prev = done["upto_id"] + 1, done["upto_hash"]
        result.since_id, result.since_at = done["upto_id"], done["at"]
    for row in store.audit.iter(after=expect_id - 1 if result.since_id else -1,
                                practice=practice):
        rid = row["id"]
        result.rows += 1
        result.first_id = result.first_id or rid
        if rid < expect_id:
            result.add(f"row #{rid} should have been removed by the retention purge "
                       f"(anchor at #{expect_id - 1})")
        elif rid > expect_id:
            gap = f"#{expect_id}" if rid == expect_id + 1 else f"#{expect_id} to #{rid - 1}"
            result.add(f"row {gap} missing: deleted")
        if audit_hash(row["prev_hash"], row) != row["hash"]:
            result.add(f"row #{rid} was changed after it was written (its hash does not match)")
        elif row["prev_hash"] != prev:
            result.add(f"row #{rid} does not follow the row before it: a row was inserted, "
                       "changed or deleted there")
        if anchor and not anchor_confirmed and row["action"] == "audit purged" \
                and anchor["upto_hash"] in (row["detail"] or ""):
            anchor_confirmed = True
        prev, expect_id = row["hash"], max(expect_id, rid + 1)
    if result.head_id >= expect_id:
        gap = f"#{expect_id}" if result.head_id == expect_id else \
            f"#{expect_id} to #{result.head_id}"
        result.add(f"row {gap} missing at the end: deleted")
    elif result.head_id and prev != result.head_hash:
        result.add(f"the last row #{expect_id - 1} is not the one recorded as written last")
    if not anchor_confirmed:
        result.add(f"the purge anchor at #{anchor['upto_id'] if anchor else '?'} has no "
                   "matching 'audit purged' event: rows at the start were deleted")
    return result


def history(store: Store, reference: str, practice: str | None = None) -> list[dict[str, Any]]:
    return store.audit.rows(reference.strip().upper(), practice)


def export_text(store: Store, reference: str, practice: str | None = None) -> str:
    """One submission's history as a readable table (what a patient may ask to see);
    with `practice`, only that practice's events, and only its chain verified."""
    ref = reference.strip().upper()
    rows = history(store, ref, practice)
    lines = [f"Audit history of {ref}", ""]
    if not rows:
        return "\n".join([*lines, "No events recorded for this reference (unknown, or "
                          "older than the audit retention period).", ""])
    table = [HEADER] + [(r["at"][:19].replace("T", " "), r["action"], r["outcome"], r["actor"],
                         r["ip"] or "-", r["form_id"] or "-", _clean(r["detail"] or ""))
                        for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(HEADER) - 1)]
    for t in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(t, widths, strict=False))
                     + "  " + t[-1])
    check = verify(store, practice=practice)
    lines += ["", f"{len(rows)} event(s). Audit chain: "
              + ("verified, unchanged." if check.ok else
                 "PROBLEMS FOUND - run `formrelay audit verify`."), ""]
    return "\n".join(lines)


PRACTICE_HEADER = ("id", "time (UTC)", "action", "outcome", "actor", "access point",
                   "reference", "form", "detail")


def export_practice(store: Store, practice: str) -> Iterator[str]:
    """A practice's whole chain, one tab-separated line per event in id order (what its
    data controller keeps or hands to an auditor), read in pages, then whether the chain
    verifies. Never another practice's events."""
    yield "\t".join(PRACTICE_HEADER)
    count = 0
    for r in store.audit.iter(practice=practice):
        count += 1
        yield "\t".join(_clean(str(v or "-")) for v in (
            r["id"], r["at"][:19].replace("T", " "), r["action"], r["outcome"], r["actor"],
            r["ip"], r["reference"], r["form_id"], r["detail"]))
    check = verify(store, practice=practice)
    yield ""
    yield (f"{count} event(s) of practice {practice}. Audit chain: "
           + ("verified, unchanged." if check.ok else
              f"PROBLEMS FOUND - run `formrelay audit verify --practice {practice}`."))


def _clean(text: str) -> str:
    # Values a client chose (a typed user name) must not forge lines in the export.
    return "".join(c if c.isprintable() else "?" for c in text)
