"""gunicorn's gevent worker with two guards for a service reachable without a proxy.

Each worker holds at most `worker_connections` (100) connections. Idle or trickling
sockets used to fill them all: 200 idle sockets from one address made a form page take
4.5 s, 1,000 took 24 s (issue 16.7). So:

* A connection must send a complete request line and headers within HEADER_SECONDS of
  being accepted, whatever `keepalive` says (gunicorn applies no limit at all with
  keepalive = 0); then it is shut down. Later requests on a kept-alive connection keep
  to gunicorn's `keepalive`.
* One client network (an address; an IPv6 /64) holds at most CONNECTIONS_PER_ADDRESS
  of a worker's connections (FORMRELAY_CONNECTIONS_PER_ADDRESS, 0 = no limit); one more
  is closed at once, before it costs anything. Behind a proxy (server.trusted_proxies >
  0) every connection comes from the proxy, so the limit is off there: the proxy's own
  (deploy/nginx.conf `limit_conn`, deploy/README.md "Slow clients") does the job.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

import gevent
from gunicorn.workers.ggevent import GeventWorker

from ..store.clinician import client_network

log = logging.getLogger("formrelay.server")

HEADER_SECONDS = 5.0
CONNECTIONS_PER_ADDRESS = 20  # per worker process; a practice's office NAT fits well
PER_ADDRESS_ENV = "FORMRELAY_CONNECTIONS_PER_ADDRESS"
WARN_EVERY_SECONDS = 60.0


def per_address_limit(environ: Mapping[str, str], trusted_proxies: int) -> int:
    """Connections one client network may hold per worker: 0 (no limit) behind a proxy."""
    value = int(environ.get(PER_ADDRESS_ENV, CONNECTIONS_PER_ADDRESS))  # ValueError: checked
    if value < 0:  # at start-up (ops/server.py check_before_workers)
        raise ValueError(f"{value} < 0")
    return 0 if trusted_proxies else value


class GuardedGeventWorker(GeventWorker):
    """GeventWorker + a deadline for the first request's headers + connections per
    client network bounded."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.per_address = 0
        self.open: dict[str, int] = {}
        self.deadlines: dict[socket.socket, Any] = {}
        self.warned: dict[str, float] = {}

    def load_wsgi(self) -> None:
        super().load_wsgi()
        services = getattr(self.wsgi, "extensions", {}).get("formrelay")
        proxies = services.settings.server.trusted_proxies if services is not None else 0
        self.per_address = per_address_limit(os.environ, proxies)

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        who = client_network(addr[0]) if isinstance(addr, tuple) and addr else ""
        if who and self.per_address and self.open.get(who, 0) >= self.per_address:
            self._refuse(client, who)
            return
        if who:
            self.open[who] = self.open.get(who, 0) + 1
        deadline = gevent.get_hub().loop.timer(HEADER_SECONDS)
        deadline.start(_cut_off, client)
        self.deadlines[client] = deadline
        try:
            super().handle(listener, client, addr)
        finally:
            if self.deadlines.pop(client, None) is not None:
                deadline.close()
            if who:
                left = self.open.get(who, 1) - 1
                if left:
                    self.open[who] = left
                else:
                    self.open.pop(who, None)

    def handle_request(self, listener_name: Any, req: Any, sock: socket.socket,
                       addr: Any) -> None:
        self._request_in(sock)
        super().handle_request(listener_name, req, sock, addr)

    def handle_http2(self, listener: Any, client: socket.socket, addr: Any, *args: Any,
                     **kwargs: Any) -> None:
        # HTTP/2 (off unless gunicorn's http_protocols names it): its preface came in time
        self._request_in(client)
        super().handle_http2(listener, client, addr, *args, **kwargs)

    def _request_in(self, sock: socket.socket) -> None:
        deadline = self.deadlines.pop(sock, None)
        if deadline is not None:  # the first request's headers are in: no cut-off now
            deadline.close()

    def _refuse(self, client: socket.socket, who: str) -> None:
        now = time.monotonic()
        if now - self.warned.get(who, -WARN_EVERY_SECONDS) >= WARN_EVERY_SECONDS:
            self.warned = {k: t for k, t in self.warned.items()
                           if now - t < WARN_EVERY_SECONDS}  # stays small
            self.warned[who] = now
            log.warning("client %s holds %d connections of this worker already; further "
                        "ones are closed at once (%s, 0 = no limit; behind a proxy set "
                        "server.trusted_proxies)", who, self.per_address, PER_ADDRESS_ENV)
        try:
            client.close()
        except OSError:
            pass


def _cut_off(client: socket.socket) -> None:
    """No complete request in time: shut the socket down, so the greenlet waiting for
    the headers reads end-of-file and gunicorn closes the connection quietly."""
    try:
        client.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed already
