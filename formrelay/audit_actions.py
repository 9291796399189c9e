"""Every action the audit log may record, as one closed list.

The audit log is read by people (a patient's `formrelay audit export`, a privacy
officer's review), so each action must mean something written down: the README's
"Audit log" section explains every member, and the store refuses any other action
string. A `StrEnum` member equals its string, so callers may pass either.
"""

from __future__ import annotations

from enum import StrEnum


class AuditAction(StrEnum):
    # a submission: stored ("ok"), refused at the form or failed to store
    RECEIVED = "received"
    # the outbox: mail queued (again, by the operator), retried, accepted, given up
    QUEUED = "queued"
    DEFERRED = "deferred"
    SENT = "sent"
    FAILED = "failed"
    # ciphertext or a mail record removed (processed, delivered, retention)
    DELETED = "deleted"
    # the clinician area: held ciphertext fetched (browser or API)
    DOWNLOADED = "downloaded"
    # the patient's copy, from offer to deletion
    COPY_ISSUED = "copy issued"
    COPY_MAIL_SENT = "copy mail sent"
    COPY_OPENED = "copy opened"
    COPY_WRONG_CODE = "copy wrong code"
    COPY_LOCKED = "copy locked"
    COPY_EXPIRED = "copy expired"
    COPY_DELETED = "copy deleted"
    # documents from the patient: the upload link, its files, their download and deletion
    UPLOAD_INVITED = "upload link sent"
    UPLOAD_MAIL_SENT = "upload mail sent"
    UPLOAD_STARTED = "upload started"
    UPLOAD_RECEIVED = "upload received"
    UPLOAD_REFUSED = "upload refused"
    UPLOAD_CLOSED = "upload closed"
    UPLOAD_EXPIRED = "upload expired"
    UPLOAD_DOWNLOADED = "upload downloaded"
    UPLOAD_DELETED = "upload deleted"
    # the practice's answer to a patient, opened with the patient's reply code
    REPLY_OFFERED = "reply code issued"
    REPLY_ANSWERED = "answer written"
    REPLY_MAIL_SENT = "answer mail sent"
    REPLY_OPENED = "answer opened"
    REPLY_WRONG_CODE = "answer wrong code"
    REPLY_LOCKED = "answer locked"
    REPLY_EXPIRED = "answer expired"
    REPLY_PATIENT = "patient replied"
    # clinician sessions and the API
    LOGIN = "login"
    LOGOUT = "logout"
    SESSION_EXPIRED = "session expired"
    API_ACCESS = "api access"
    REQUEST = "request"
    # accounts, changed by the operator or by the clinician
    USER_CREATED = "user created"
    USER_CHANGED = "user changed"
    USER_REMOVED = "user removed"
    # the browser reader: invitation links
    USER_INVITED = "user invited"
    INVITATION = "invitation"
    # the browser reader: keys made in the browser (never their secret)
    KEY_CREATED = "key created"
    KEY_PINNED = "key pinned"
    KEY_CHANGED = "key changed"
    KEY_RECOVERED = "key recovered"
    KEY_EXPORTED = "key exported"
    # a practice owner added a member's key to a form's readers, or took one off
    FORM_READERS = "form readers"
    # a held ciphertext fetched to decrypt in the browser (`failed`: the page could not)
    READ = "read"
    # triage: who handles a held submission was noted (a name, never content)
    TRIAGED = "triaged"
    # the retention purge of the log itself
    AUDIT_PURGED = "audit purged"
