"""A QEMU that misbehaves, for issue 23's fault tests: a QMP server, or a proxy in front of a real QEMU.

Run as a script in its own process (drgn holds the GIL while it sets up a
QMP connection, so a fake in the test's own process could not answer it):

  python fakeqmp.py serve SOCKET [--mute-cmd CMD [--mute-on K]] [--mute-after N] [--close-after N]
                             [--slow-cmd CMD [--slow-s S]] [--paused] [--log FILE]
  python fakeqmp.py proxy SOCKET QEMU_SOCKET [--mute-after N] [--log FILE]

``serve`` speaks as much QMP as drgn needs for physical reads: the greeting,
``qmp_capabilities``, ``query-target`` (x86_64), ``human-monitor-command``
with ``info mtree -f`` (no RAM: drgn reads everything through ``xp``) and
``xp /Nxb ADDR`` (byte i of guest memory is ``i & 0xff``),
``query-status``/``stop``/``cont``.  ``--mute-cmd`` never answers that
command (from its K-th time on, with ``--mute-on K``); ``--mute-after N``
answers N ``xp`` reads and no more; ``--close-after N`` hangs up on read N+1;
``--slow-cmd CMD`` answers CMD only after ``--slow-s`` seconds.  ``proxy`` forwards to a real QEMU
(file descriptors too: drgn passes one for VMCOREINFO) and answers
``gpa2hva`` itself with a failure, since drgn would otherwise read guest
RAM from the process at the socket's other end, which is this one.  Each
``xp`` forwarded or answered is a line "xp N" in the log, and "muted" when
it stops answering.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time

GREETING = b'{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}\r\n'


def xp_text(command_line: str) -> str:
    _, fmt, addr = command_line.split()
    count, base = int(fmt[1:-2]), int(addr, 16)
    rows = []
    for i in range(0, count, 8):
        rows.append(f"{base + i:016x}: " + " ".join(f"0x{(base + j) & 0xff:02x}" for j in range(i, min(i + 8, count))))
    return "\r\n".join(rows) + "\r\n"


class Log:
    def __init__(self, path):
        self.path = path

    def __call__(self, line: str) -> None:
        if self.path:
            with open(self.path, "a") as f:
                f.write(line + "\n")


def serve(args) -> None:
    log = Log(args.log)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(args.socket)
    srv.listen(8)
    state = {"running": not args.paused, "xp": 0}

    def one(conn: socket.socket) -> None:
        f = conn.makefile("rwb")
        f.write(GREETING)
        f.flush()
        for line in f:
            req = json.loads(line)
            cmd = req.get("execute")
            log(f"cmd {cmd}")
            if cmd == args.slow_cmd:
                log(f"slow {cmd}")
                time.sleep(args.slow_s)
            if cmd == args.mute_cmd:
                state[cmd] = state.get(cmd, 0) + 1
                if state[cmd] >= args.mute_on:
                    log("muted")
                    time.sleep(3600)
            if cmd == "human-monitor-command":
                text = req["arguments"]["command-line"]
                if text.startswith("xp "):
                    state["xp"] += 1
                    n = state["xp"]
                    if args.mute_after is not None and n > args.mute_after:
                        log("muted")
                        time.sleep(3600)
                    if args.close_after is not None and n > args.close_after:
                        log("closed")
                        f.close()
                        conn.shutdown(socket.SHUT_RDWR)
                        conn.close()
                        return
                    log(f"xp {n}")
                    ret = xp_text(text)
                else:
                    ret = ""
            elif cmd == "query-target":
                ret = {"arch": "x86_64"}
            elif cmd == "query-status":
                ret = {"running": state["running"], "status": "running" if state["running"] else "paused"}
            elif cmd in ("stop", "cont"):
                state["running"] = cmd == "cont"
                f.write(json.dumps({"event": "STOP" if cmd == "stop" else "RESUME", "timestamp": {}}).encode()
                        + b"\r\n")
                ret = {}
            else:
                ret = {}
            f.write(json.dumps({"return": ret}).encode() + b"\r\n")
            f.flush()

    while True:
        c, _ = srv.accept()
        threading.Thread(target=one, args=(c,), daemon=True).start()


def proxy(args) -> None:
    log = Log(args.log)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(args.socket)
    srv.listen(8)
    count = {"xp": 0}

    def one(client: socket.socket) -> None:
        qemu = socket.socket(socket.AF_UNIX)
        qemu.connect(args.qemu)
        muted = threading.Event()

        def down() -> None:  # QEMU -> client
            try:
                while True:
                    data = qemu.recv(65536)
                    if not data or muted.is_set():
                        break
                    client.sendall(data)
            except OSError:  # the other side went first
                pass

        threading.Thread(target=down, daemon=True).start()
        buf = b""
        while True:
            data, fds, _, _ = socket.recv_fds(client, 65536, 4)
            if not data:
                break
            buf += data
            lines = []
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                lines.append(line + b"\n")
            out = b""
            for line in lines:
                req = json.loads(line)
                text = (req.get("arguments") or {}).get("command-line", "")
                if text.startswith("gpa2hva"):
                    client.sendall(b'{"return": "not through this proxy\\r\\n"}\r\n')
                    continue
                if text.startswith("xp "):
                    count["xp"] += 1
                    if args.mute_after is not None and count["xp"] > args.mute_after:
                        muted.set()
                        log("muted")
                        time.sleep(3600)
                    log(f"xp {count['xp']}")
                out += line
            if fds:
                socket.send_fds(qemu, [out], fds)
            elif out:
                qemu.sendall(out)
        qemu.shutdown(socket.SHUT_RDWR)  # wakes down(): QEMU sees us go and takes its next client
        qemu.close()
        client.close()

    while True:
        c, _ = srv.accept()
        threading.Thread(target=one, args=(c,), daemon=True).start()


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("socket")
    s.add_argument("--mute-cmd")
    s.add_argument("--mute-on", type=int, default=1, help="the time --mute-cmd comes that goes unanswered")
    s.add_argument("--mute-after", type=int)
    s.add_argument("--close-after", type=int)
    s.add_argument("--slow-cmd", help="answer this command only after --slow-s seconds")
    s.add_argument("--slow-s", type=float, default=2.0)
    s.add_argument("--paused", action="store_true")
    s.add_argument("--log")
    x = sub.add_parser("proxy")
    x.add_argument("socket")
    x.add_argument("qemu")
    x.add_argument("--mute-after", type=int)
    x.add_argument("--log")
    args = p.parse_args()
    (serve if args.mode == "serve" else proxy)(args)


if __name__ == "__main__":
    main()
