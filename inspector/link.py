"""The QMP connection drgn reads a live QEMU guest through, with every exchange bounded.

Design.  drgn talks QMP on a socket and waits on it without a timeout; a
QEMU that stops answering (wedged, or its monitor held) would hang us.  So
we connect to QEMU ourselves and hand drgn the descriptor
(``Program.set_qemu_qmp(fd)``), in two phases:

* **Set-up.**  drgn's ``set_qemu_qmp`` reads the greeting and runs a handful
  of commands (``qmp_capabilities``, ``query-target``, ``info mtree``,
  ``gpa2hva``, a one-byte ``dump-guest-memory`` for VMCOREINFO) while holding
  Python's GIL, so no thread of ours can run meanwhile.  Its socket therefore
  carries ``SO_RCVTIMEO``/``SO_SNDTIMEO``: every read or write drgn makes ends
  within the timeout, with EAGAIN, which :func:`connect` turns into "did not
  answer".  drgn sees QEMU's own socket here, so its fast path (reading guest
  RAM straight from the QEMU process, found by ``SO_PEERCRED``) still works.
* **Reads.**  Then the descriptor drgn holds is swapped (``dup2``) for one end
  of a socketpair, and :class:`Link`, a thread of ours, relays between the
  other end and QEMU.  drgn releases the GIL while it waits for a memory read
  (``xp``), so the relay runs; it times each request drgn sends, and when one
  gets no answer within the timeout, or QEMU closes the socket, it records
  why and shuts drgn's end: drgn's read fails at once (it raises, it does
  not hang or crash: EOF is "QMP connection closed unexpectedly"), and every
  later read fails the same way, so no late answer is ever taken for the
  answer to another request.  :meth:`Link.failure` is the one line the
  command line prints.  QMP events are not passed on (drgn skips them; a
  guest paused for each sample of a week's watch would pile them up).

A signal (Ctrl-C, SIGTERM) while drgn waits on the relay also ends the wait:
Python's C-level handler writes the signal to :func:`signal.set_wakeup_fd`,
which the relay watches; it shuts drgn's end, and the Python handler then
raises in the main thread.  Without that, drgn retries its read after EINTR
and the handler would run only when the timeout struck -- which is what
happens during the set-up, where no thread of ours can run: a signal then
takes effect within the timeout, not at once.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import struct
import threading
import time
from collections import deque
from typing import Optional

import drgn

from .errors import TargetError

DEFAULT_TIMEOUT = 30.0  # seconds: a QMP exchange of a slow (TCG) guest, with room


class NoAnswerError(TargetError):
    """A live target did not answer within the timeout, or hung up."""


def no_answer(path: str, timeout: float) -> str:
    return f"QEMU at {path} did not answer within {timeout:g} s"


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1e6))


def _addr(path: str):
    if ":" in path and not os.path.exists(path):
        host, _, port = path.rpartition(":")
        return socket.AF_INET, (host or "127.0.0.1", int(port))
    return socket.AF_UNIX, path


class Link:
    """The relay between drgn and QEMU once the connection is set up (see the module)."""

    def __init__(self, path: str, timeout: float, qemu: socket.socket, drgn_fd: int):
        self.path, self.timeout = path, timeout
        self.qemu = qemu
        self.drgn_fd = drgn_fd
        self.why: Optional[str] = None  # "stalled" | "closed" | "interrupted"
        self.taken = False  # a command took the failure over (a partial answer)
        self.signal: Optional[int] = None  # the signal that cut a wait ("interrupted")
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._ours: Optional[socket.socket] = None
        self._wake_r: Optional[socket.socket] = None
        self._old_wakeup: Optional[int] = None

    # -- the relay ------------------------------------------------------------------------------
    def start(self) -> None:
        """Swap drgn's descriptor for our socketpair and start relaying."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        os.dup2(theirs.fileno(), self.drgn_fd)  # drgn's fd now reads from us
        theirs.close()
        self._ours = ours
        self.qemu.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(0))
        self.qemu.settimeout(self.timeout)  # sends to QEMU: bounded too (drgn no longer shares it)
        if threading.current_thread() is threading.main_thread():
            r, w = socket.socketpair()
            r.setblocking(False)
            w.setblocking(False)
            try:
                old = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
            except ValueError:
                old = None
            if old is None or old != -1:  # not ours to take (an event loop's): a signal waits for the timeout
                if old is not None:
                    signal.set_wakeup_fd(old)
                r.close()
                w.close()
            else:
                self._old_wakeup, self._wake_r, self._wake_w = old, r, w
        self._thread = threading.Thread(target=self._run, name="pageext-qmp-relay", daemon=True)
        self._thread.start()

    def _cut(self, why: str) -> None:
        if self.why is None:
            self.why = why
        try:
            self._ours.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _run(self) -> None:
        ours, qemu = self._ours, self.qemu
        pending: deque[float] = deque()  # deadlines of requests sent, oldest first
        from_drgn, from_qemu = b"", b""
        watch = [ours, qemu] + ([self._wake_r] if self._wake_r is not None else [])
        try:
            while not self._stop.is_set() and self.why is None:
                wait = 1.0 if not pending else max(0.0, min(1.0, pending[0] - time.monotonic()))
                ready, _, _ = select.select(watch, [], [], wait)
                if pending and time.monotonic() >= pending[0] and qemu not in ready:
                    self._cut("stalled")
                    break
                if self._wake_r is not None and self._wake_r in ready:
                    got = b""
                    try:
                        while chunk := self._wake_r.recv(64):
                            got += chunk
                    except (BlockingIOError, OSError):
                        pass
                    if pending and got:  # drgn waits on us: let the signal's handler run
                        self.signal = got[-1]
                        self._cut("interrupted")
                        break
                if ours in ready:
                    data = ours.recv(65536)
                    if not data:  # drgn closed its end (the program is gone): so do we
                        qemu.close()
                        break
                    from_drgn += data
                    n = from_drgn.count(b"\n")
                    if n:
                        from_drgn = from_drgn[from_drgn.rindex(b"\n") + 1:]
                        pending.extend([time.monotonic() + self.timeout] * n)
                    try:
                        qemu.sendall(data)
                    except OSError:
                        self._cut("stalled")
                        break
                if qemu in ready:
                    data = qemu.recv(65536)
                    if not data:
                        self._cut("closed")
                        break
                    from_qemu += data
                    out = []
                    while b"\n" in from_qemu:
                        line, _, from_qemu = from_qemu.partition(b"\n")
                        if _is_event(line):
                            continue
                        if pending:
                            pending.popleft()
                        out.append(line + b"\n")
                    if out:
                        ours.sendall(b"".join(out))
        except OSError:
            self._cut("closed")

    def interrupted(self) -> Optional[int]:
        """The signal that cut drgn's wait, if one did.  drgn then raises its
        own error, which may leave an ``except KeyboardInterrupt`` before the
        signal's handler runs: the caller raises the interruption itself."""
        return self.signal if self.why == "interrupted" else None

    def failure(self) -> Optional[str]:
        """The line to print when the relay cut drgn off, else None."""
        if self.why == "stalled":
            return no_answer(self.path, self.timeout)
        if self.why == "closed":
            return f"QEMU at {self.path} closed the QMP connection while we read"
        return None

    def close(self) -> None:
        """Stop relaying (drgn's reads fail from now on) and free the sockets."""
        self._stop.set()
        if self._ours is not None:
            try:
                self._ours.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)
        if self._wake_r is not None:
            try:
                if threading.current_thread() is threading.main_thread():
                    signal.set_wakeup_fd(self._old_wakeup if self._old_wakeup is not None else -1)
            except ValueError:
                pass
            self._wake_r.close()
            self._wake_w.close()
            self._wake_r = None
        for s in (self._ours, self.qemu):
            if s is not None:
                s.close()


def _is_event(line: bytes) -> bool:
    if b'"event"' not in line[:64] and b'"event"' not in line[-256:]:
        return False
    try:
        msg = json.loads(line)
    except ValueError:
        return False
    return isinstance(msg, dict) and "event" in msg


def connect(prog: drgn.Program, path: str, timeout: float = DEFAULT_TIMEOUT) -> Link:
    """Set ``prog`` to the QEMU guest behind QMP socket ``path`` (unix path or
    HOST:PORT), every exchange bounded by ``timeout`` seconds.

    Returns the :class:`Link`, relaying.  Raises
    :class:`NoAnswerError` when QEMU does not answer the set-up in time,
    :class:`TargetError` when it refuses it."""
    link = open_link(prog, path, timeout)
    link.start()
    return link


def open_link(prog: drgn.Program, path: str, timeout: float = DEFAULT_TIMEOUT) -> Link:
    """:func:`connect`, short of starting the relay (:meth:`Link.start`):
    the caller keeps the link before anything can fail on it."""
    family, addr = _addr(path)
    qemu = socket.socket(family, socket.SOCK_STREAM)
    try:
        qemu.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(timeout))
        qemu.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(timeout))
        qemu.connect(addr)
    except OSError as e:
        qemu.close()
        if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINPROGRESS):
            raise NoAnswerError(no_answer(path, timeout)) from None
        raise TargetError(f"cannot connect to QMP socket {path}: {e.strerror or e}") from None
    drgn_fd = os.dup(qemu.fileno())  # drgn owns (and closes) this one; same socket, same timeouts
    started = time.monotonic()
    try:
        prog.set_qemu_qmp(drgn_fd)
    except Exception as e:  # drgn raises OSError (EAGAIN: our timeout) or a plain Exception
        qemu.close()
        if isinstance(e, OSError) and e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            raise NoAnswerError(no_answer(path, timeout)) from None
        text = (str(e) or type(e).__name__).splitlines()[0]
        if "closed unexpectedly" in text:
            raise NoAnswerError(f"QEMU at {path} closed the QMP connection while we set it up "
                                f"(after {time.monotonic() - started:.1f} s)") from None
        raise TargetError(f"cannot talk to QEMU over {path}: {text}") from None
    return Link(path, timeout, qemu, drgn_fd)
