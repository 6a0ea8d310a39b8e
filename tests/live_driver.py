"""Run ``inspect`` and ``owner`` over and over on a live kernel (tests/test_vm_live.py).

    python tests/live_driver.py VMLINUX OUT N [RANGE [TARGET]]

Opens TARGET (default /proc/kcore: run inside the test guest, through
``chroot /host``) once, then runs ``inspect --json`` and ``owner --json``
(``--range RANGE`` if given, "-" for all) N times each, alternately, each on a fresh session -- the commands' own
code, through :func:`inspector.cli.run`, with their default ``--retries``.
Under TCG a new process per run would spend most of a minute loading the
vmlinux's debug info again; the target is the same, every session reads it
afresh.  Each run is summarised as one JSON line in OUT (what the test
checks: the sections whose tables or records were seen, total_usage, the
checks, what is missing, the stderr lines) as soon as it ends.
"""

from __future__ import annotations

import io
import json
import sys
import time


def summary(name: str, status: int, out: str, err: str, pages: int) -> dict:
    d: dict = {"cmd": name, "rc": status, "stderr": [ln for ln in err.splitlines() if ln.strip()]}
    try:
        if name == "inspect":
            doc = json.loads(out)
            d.update(tables=sorted(t["section"] for t in doc["tables"]),
                     states=sorted({t["state"] for t in doc["tables"]}),
                     total_usage=doc["page_ext"]["kernel_total_usage"], total_bytes=doc["page_ext"]["total_bytes"],
                     checks={c["name"]: c["status"] for c in doc["checks"]}, missing=doc["missing"])
        else:
            lines = [json.loads(line) for line in out.splitlines() if line.strip()]
            recs = [r for r in lines if "pfn" in r]
            d.update(records=len(recs), sections=sorted({r["pfn"] // pages for r in recs}),
                     corrupt=sum(1 for r in recs if r["corrupt"]), missing=lines[-1].get("missing") if lines else None)
    except (ValueError, KeyError, IndexError) as e:
        d["unparsable"] = f"{type(e).__name__}: {e}"
    return d


def main() -> None:
    vmlinux, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    prange = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "-" else None
    where = sys.argv[5] if len(sys.argv) > 5 else "/proc/kcore"
    from inspector.cli import defaults, run
    from inspector.commands import all_commands
    from inspector.target import open_target

    target = open_target(where, None, vmlinux)
    from inspector import PageExt
    pages = PageExt(target.prog, target=target).geometry.section_pages
    cmds = all_commands()
    with open(path, "w") as f:
        for i in range(n):
            for name in ("inspect", "owner"):
                kw = dict(defaults(cmds[name]), target=where, vmlinux=vmlinux, as_json=True, progress=False)
                if name == "owner":
                    kw["prange"] = prange
                    kw["trailer"] = True  # the {"missing": ...} line summary() reads
                out, err = io.StringIO(), io.StringIO()
                t0 = time.time()
                try:
                    status = run(cmds[name], kw, out, err, target=target)
                except Exception as e:  # noqa: BLE001 -- the test reports it
                    status, err = 99, io.StringIO(f"{type(e).__name__}: {e}")
                d = summary(name, status, out.getvalue(), err.getvalue(), pages)
                d.update(i=i, t0=t0, t1=time.time())
                f.write(json.dumps(d) + "\n")
                f.flush()


if __name__ == "__main__":
    main()
