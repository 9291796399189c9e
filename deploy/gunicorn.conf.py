"""gunicorn configuration for formrelay (containers and systemd).

    FORMRELAY_CONFIG=/etc/formrelay/config.toml gunicorn --config deploy/gunicorn.conf.py

The settings themselves live in formrelay/ops/server.py (`gunicorn_options`), shared with
`formrelay serve`. What they amount to:

* gevent workers: FORMRELAY_WORKERS processes (default 2), each holding up to
  FORMRELAY_CONNECTIONS open connections (default 100), bound to FORMRELAY_BIND (default
  127.0.0.1:8000; the container uses 0.0.0.0:8000 behind Caddy). A connection costs a
  greenlet, not a thread: a few clients sending slowly or not at all cannot take the
  service down. A new connection's request line and headers must arrive within 5 s
  (whatever keepalive says); without a proxy in front (trusted_proxies = 0) one client
  address holds at most FORMRELAY_CONNECTIONS_PER_ADDRESS (20) of a worker's
  connections; a body slower than server.body_timeout_seconds / body_min_rate
  (config.toml) is refused with 408;
* timeout 120 s, graceful_timeout 30 s, keepalive 5 s, workers recycled after ~2000
  requests, no preload (each worker opens its own SQLite connections);
* logs: JSON lines on stdout/stderr; the access line holds method, path, status,
  bytes, duration and client address - never a query string and never the secret of a
  patient-copy link (/copy/[redacted]); no headers, no referrer;
* forwarded headers are trusted only through the app's ProxyFix, with the count set
  in config.toml (server.trusted_proxies), never by gunicorn itself.
"""

import os

from formrelay.ops.server import options_from_env

# Every name defined here is read by gunicorn as a setting.
globals().update(options_from_env(os.environ))

# The app factory; each worker reads the file named by FORMRELAY_CONFIG when it starts
# (and a recycled one too), or keeps the last good configuration while it is broken.
wsgi_app = "formrelay:create_app()"
