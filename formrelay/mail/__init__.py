"""Mail: the TLS-only SMTP transport, the durable outbox and its worker, the kinds of mail,
MIME building, notifications, address checks and reminders."""
