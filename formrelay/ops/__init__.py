"""Operating the service: checks, retention, backups, the audit log's export and
verification, the demo, the host page and the gunicorn settings."""
