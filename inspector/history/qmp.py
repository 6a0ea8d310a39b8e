"""A minimal QMP client: stop and continue a QEMU guest around a sample.

Design.  ``watch --pause SOCKET`` holds the guest still while it reads, so a
sample is one instant.  drgn holds the target's own QMP socket (a QMP socket
serves one client at a time), so the pause goes through a second one --
QEMU's control socket, e.g. the test VM's ctl.sock beside qmp.sock.  QMP is
JSON lines over a unix socket: a greeting, ``qmp_capabilities``, then one
reply per command, with asynchronous events (STOP, RESUME, ...) in between,
which we skip.  We connect for each pause and leave the socket free between
samples for other tools.  A guest that was already paused when we came is
left paused, and :func:`paused` says so.  Every exchange is bounded by the
timeout (``--timeout``): a socket that stops answering is
:class:`~inspector.link.NoAnswerError`, never a hang.  A guest we stopped
is continued on every way out of the block (an exception, Ctrl-C, SIGTERM:
the command line raises on it) -- unless QEMU itself stopped answering.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
from typing import Iterator

from ..errors import TargetError
from ..link import DEFAULT_TIMEOUT, NoAnswerError, no_answer

TIMEOUT = DEFAULT_TIMEOUT


class QMP:
    def __init__(self, path: str, timeout: float = TIMEOUT):
        self.path, self.timeout = path, timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
            self.file = self.sock.makefile("rwb")
            if "QMP" not in self._read():
                raise TargetError(f"{path}: not a QMP socket (no QMP greeting)")
            self.execute("qmp_capabilities")
        except (OSError, ValueError, TargetError) as e:
            if hasattr(self, "file"):
                self.file.close()
            self.sock.close()
            if isinstance(e, TargetError):
                raise
            if isinstance(e, socket.timeout):
                raise NoAnswerError(no_answer(path, timeout) + " (--pause)") from None
            raise TargetError(f"--pause {path}: {getattr(e, 'strerror', None) or e} (QEMU's control "
                              "socket, one client at a time)") from None

    def _read(self) -> dict:
        line = self.file.readline()
        if not line:
            raise OSError("QEMU closed the socket")
        return json.loads(line)

    def execute(self, command: str):
        """Run a command; its "return" value, or TargetError with QEMU's "error"."""
        try:
            self.file.write(json.dumps({"execute": command}).encode() + b"\n")
            self.file.flush()
            while True:
                reply = self._read()
                if "return" in reply or "error" in reply:
                    break
        except socket.timeout:
            raise NoAnswerError(f"{no_answer(self.path, self.timeout)} (QMP {command}, --pause)") from None
        except (OSError, ValueError) as e:
            raise TargetError(f"QMP {command} on {self.path}: {getattr(e, 'strerror', None) or e}") from None
        if "return" in reply:
            return reply["return"]
        raise TargetError(f"QMP {command} on {self.path}: {reply['error'].get('desc', reply['error'])}")

    def close(self) -> None:
        self.file.close()  # the socket stays open while its file object is
        self.sock.close()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back (delivered after the block) in the main
    thread: a stop or cont is never cut between sending it and knowing it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def paused(path: str, timeout: float = TIMEOUT) -> Iterator[bool]:
    """The guest behind QMP socket ``path`` stopped for the block (and
    continued after it, unless it was stopped before).  Yields whether we
    stopped it: False for a guest someone else had paused (left paused).

    A signal that comes while the stop is under way is held until it is done,
    inside the block's ``try``: the guest is continued whatever the signal."""
    q = QMP(path, timeout)
    stopped = False
    try:
        running = bool(q.execute("query-status").get("running", True))
        with _signals_held():
            if running:
                q.execute("stop")
                stopped = True
        yield running
    finally:
        try:
            if stopped:
                with _signals_held():
                    q.execute("cont")
        finally:
            q.close()
