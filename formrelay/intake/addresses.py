"""Can an e-mail address go into a mail header as it is?

email-validator accepts addresses that Python's email package changes when it writes
them into a header: an RFC 2047 encoded word (`=?utf-8?b?...?=@example.org`) is decoded
there, into another address, a list of them, or a line break that makes building the
mail fail at every attempt. Such an address is refused at the form (`HeaderSafe`, next
to the field), and a queued mail to one is failed at once by the worker (a BuildError),
instead of being retried for days. `header_problem` says why, never echoing the address
(it is patient data). No Flask here; WTForms only inside the field validator.
"""

from __future__ import annotations

import re
import unicodedata
from email import message_from_bytes, policy
from email.errors import MessageError
from email.message import EmailMessage
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the worker imports this module: WTForms only when a form validates
    import wtforms


# Plain addresses, the near-all of what patients type: ASCII letters, digits and a few
# marks in dot-separated atoms. The email package writes and reads these back unchanged
# (tests/test_addresses.py checks that against the full round trip), so they skip it:
# that round trip through its header registry cost ~1 ms a post. Anything else takes it.
_PLAIN = re.compile(r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*"
                    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_PLAIN_MAX = 254  # RFC 5321's longest path; longer ones take the full check


def header_problem(address: str) -> str:
    """'' if `address` can be written in a To: header and read back unchanged; else a
    short reason (without the address)."""
    if len(address) <= _PLAIN_MAX and _PLAIN.fullmatch(address):
        return ""
    return _round_trip_problem(address)


def _round_trip_problem(address: str) -> str:
    """The full check: write `address` into a header with the email package and read
    it back."""
    if "=?" in address:
        return "contains an RFC 2047 encoded word (=?...?=)"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in address):
        return "contains a control or line-break character"
    try:
        msg = EmailMessage(policy=policy.SMTP)
        msg["To"] = address
        back = message_from_bytes(msg.as_bytes(), policy=policy.default)["To"].addresses
    except (ValueError, TypeError, IndexError, MessageError):
        return "cannot be written in a mail header"
    if len(back) != 1 or back[0].display_name or back[0].addr_spec != address:
        return "changes when written in a mail header"
    return ""


class HeaderSafe:
    """WTForms validator for e-mail fields: the address must fit a header unchanged
    (only checked once the field's other validators found nothing)."""

    def __call__(self, form: wtforms.Form, fld: wtforms.Field) -> None:
        from wtforms import validators as v

        value = (fld.data or "").strip()
        if value and not fld.errors and header_problem(value):
            raise v.ValidationError(
                fld.gettext("This e-mail address cannot be used. Type it plainly, e.g. "
                            "name@example.nl."))
