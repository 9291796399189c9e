"""Reading what a recipient decrypts: the inner message and its answers.json."""

from __future__ import annotations

import json
from email import message_from_bytes, policy
from email.message import Message
from typing import Any


def inner(plaintext: bytes) -> Message:
    return message_from_bytes(plaintext, policy=policy.default)


def answers_json(msg: Message) -> dict[str, Any]:
    for part in msg.walk():
        if part.get_filename() == "answers.json":
            return json.loads(part.get_payload(decode=True))
    raise AssertionError("no answers.json")
