"""Starting gpg without forking the worker in Python.

Under gunicorn's gevent worker, `subprocess` is gevent's: its Popen forks the whole
worker in Python (copying page tables of a ~100 MB process, running Python in the child
until exec), which measured 18.6 ms of CPU to start one gpg against 5.2 ms for the
standard library's C fork_exec. So when gevent has patched `subprocess`, gpg is started
with `os.posix_spawnp` (vfork and exec in C) and its pipes are wrapped in gevent's
cooperative file objects; gevent's child watcher reaps it, so `wait()` lets the other
greenlets run. Elsewhere (the CLI, the delivery worker, tests) the standard library's
Popen already starts processes in C and is used as it is.

`spawn` gives what python-gnupg uses of a Popen: `pid`, `stdin`, `stdout`, `stderr`,
`wait()`, `poll()` and `returncode`. The process starts in a session of its own, so a
timer can kill gpg together with anything it started (crypto/keyring.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from typing import IO, Any


def gevent_patched() -> bool:
    """True inside a worker where gevent has patched `subprocess` (gunicorn's gevent)."""
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("subprocess"))


def spawn(argv: list[str], env: Mapping[str, str] | None) -> Any:
    """Start `argv` with pipes for stdin, stdout and stderr, in a new session."""
    if not gevent_patched():
        # the standard library's Popen (C fork_exec), also where gevent's replaced it
        popen = _original_popen()
        return popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # noqa: S603 - fixed gpg argv
                     stderr=subprocess.PIPE, env=env, start_new_session=True)
    return _Spawned(argv, env)


def _original_popen() -> Any:
    if "gevent" in sys.modules:
        from gevent import monkey

        return monkey.get_original("subprocess", "Popen")
    return subprocess.Popen


class _Spawned:
    """A process started with posix_spawnp, its pipes and exit status cooperative
    (gevent); the parts of Popen that python-gnupg and the gpg timer use."""

    def __init__(self, argv: list[str], env: Mapping[str, str] | None):
        from gevent import get_hub
        from gevent import os as gos
        from gevent.fileobject import FileObjectPosix

        pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(3)]  # stdin, stdout, stderr
        child = [pipes[0][0], pipes[1][1], pipes[2][1]]
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(child)]
        try:
            loop = get_hub().loop
            loop.install_sigchld()
            self.pid = os.posix_spawnp(argv[0], argv, dict(os.environ if env is None else env),
                                       file_actions=actions, setsid=True)
            # as gevent's fork_and_watch does (no switch to the hub since the spawn, so no
            # SIGCHLD is handled before): gevent's waitpid then waits cooperatively
            gos._watch_child(self.pid, None, loop, False)
        except BaseException:
            for r, w in pipes:
                os.close(r)
                os.close(w)
            raise
        for fd in child:
            os.close(fd)
        self._waitpid = gos.waitpid
        self.stdin: IO[bytes] = FileObjectPosix(pipes[0][1], "wb", close=True)
        self.stdout: IO[bytes] = FileObjectPosix(pipes[1][0], "rb", close=True)
        self.stderr: IO[bytes] = FileObjectPosix(pipes[2][0], "rb", close=True)
        self.returncode: int | None = None
        self.args = argv

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = self._waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            _, status = self._waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode
