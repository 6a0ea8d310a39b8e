"""The fleet questions (issue 22) on a generated fleet, on DuckDB and on Spark.

The fleet is scripts/fleet_gen.py's: 200 hosts x 3 daily snapshots made
from real snapshots of the 6.1 and 6.12 test kernels (fixtures/fleet,
recorded by scripts/fleet_seed.py), with a leak planted on 3% of the hosts,
all running one kernel, a decoy growing on one host of the other kernel,
and noise everywhere.  The oracle is what was planted (the generator's
truth.json) and the leak's stack as the kernel printed it (its frames,
with shmem_fallocate, from the seed): the stack id the answers must name
is computed here from that text (offsets stripped, MD5), not taken from the
tool.  Then: both engines give identical tables for every question; a
corrupt, a foreign, a records and a newer-schema file are named and left
out (exit 3); a fleet mixing single and compacted files answers the same.

The Spark tests (marked ``spark``) run when PAGEEXT_SPARK=1 is set -- then
scripts/setup.sh installs pyspark (the [spark] extra) and a Java runtime --
and skip with the reason otherwise, or when either is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, inspect
from inspector.fleet import engines, layout, questions
from inspector.history import snapshot

sys.path.insert(0, str(ROOT / "scripts"))
import fleet_gen  # noqa: E402

HOSTS, SNAPSHOTS = 200, 3
# One set of parameters per question (the host question: the first leaking host).
ASKED = [("top", {}), ("spread", {"min_hosts": 3}), ("kernels", {"limit": 3}), ("first-seen", {}),
         ("host", {"host": "LEAK0"}), ("outlier", {}), ("outlier", {"stack": "LEAK", "limit": 0}),
         ("series", {"limit": 4})]


def stack_id(text: str) -> str:
    """The id of a stack's text: its frames without +offset/size, MD5, 12 hex digits."""
    return hashlib.md5(re.sub(r"\+0x[0-9a-f]+/0x[0-9a-f]+", "", text).encode()).hexdigest()[:12]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    out = tmp_path_factory.mktemp("fleet")
    truth = fleet_gen.generate(str(out), HOSTS, SNAPSHOTS)
    truth["leak"]["id"] = stack_id(truth["leak"]["stack"])
    truth["decoy"]["id"] = stack_id(truth["decoy"]["stack"])
    return out, truth


def params(kw: dict, truth: dict) -> dict:
    kw = dict(kw)
    if kw.get("host") == "LEAK0":
        kw["host"] = truth["leak"]["hosts"][0]
    if kw.get("stack") == "LEAK":
        kw["stack"] = truth["leak"]["id"]
    return kw


def answers(eng, root: Path, truth: dict) -> dict:
    eng.load(layout.scan(str(root)))
    return {(q, json.dumps(kw)): eng.query(questions.sql(q, **params(kw, truth))) for q, kw in ASKED}


def duckdb_answers(root: Path, truth: dict) -> dict:
    eng = engines.DuckDB()
    try:
        return answers(eng, root, truth)
    finally:
        eng.close()


@pytest.fixture(scope="module")
def duck(fleet):
    return duckdb_answers(*fleet)


def first(tables: dict, question: str) -> engines.Table:
    return next(t for (q, _), t in tables.items() if q == question)


def test_the_generated_fleet_is_what_was_asked(fleet):
    root, truth = fleet
    found = layout.scan(str(root))
    assert found.files == HOSTS * SNAPSHOTS == truth["files"] and not found.skipped
    assert len(truth["leak"]["hosts"]) == round(0.03 * HOSTS)
    assert "shmem_fallocate" in truth["leak"]["stack"]  # the kernel's own frames for fallocate()
    # Every file sits in its own host's, kernel's and day's partition.
    for path in found.groups[1][:50]:
        m = snapshot.read_meta(path)
        assert layout.partitions(path, str(root)) == {"host": m["machine"], "kernel": m["release"],
                                                      "date": m["time"][:10]}


def test_duckdb_names_the_planted_leak_its_hosts_and_kernel(duck, fleet):
    _, truth = fleet
    leak, hosts = truth["leak"], set(truth["leak"]["hosts"])
    top = first(duck, "top").dicts()
    assert top[0]["stack_id"] == leak["id"] and top[0]["kernel"] == leak["kernel"]
    assert top[0]["hosts_grown"] == len(hosts) and top[0]["kernels_grown"] == 1
    spread = first(duck, "spread").dicts()
    assert spread[0]["stack_id"] == leak["id"] and spread[0]["hosts_grown"] == len(hosts)
    assert (spread[0]["kernel"], spread[0]["last_kernel"]) == (leak["kernel"], leak["kernel"])
    assert truth["decoy"]["id"] not in {r["stack_id"] for r in spread}  # grew on one host only
    by_kernel = first(duck, "kernels").dicts()
    assert [r["stack_id"] for r in by_kernel if r["kernel"] == leak["kernel"] and r["rank"] == 1] == [leak["id"]]
    assert not [r for r in by_kernel if r["kernel"] != leak["kernel"] and r["stack_id"] == leak["id"]
                and r["hosts_grown"]]
    seen = first(duck, "first-seen").dicts()[0]
    assert seen["stack_id"] == leak["id"] and seen["started_host"] == leak["started_host"]
    assert seen["started"].replace("T", " ")[:19] == leak["started"].replace("T", " ")[:19]
    outliers = questions_with(duck, "outlier", "stack")
    assert {r["host"] for r in outliers} == hosts  # hosts that grew it >= 256 pages: exactly the planted ones
    for r in outliers:
        planted = leak["pages_per_snapshot"][r["host"]] * (SNAPSHOTS - leak["start_snapshot"][r["host"]])
        assert abs(r["growth"] - planted) < 300, r  # the planted pages, give or take the noise of a 512-page stack
    # Without --stack: each stack's most outlying host; the decoy's host stands out most.
    best = questions_with(duck, "outlier", None)[0]
    assert (best["host"], best["stack_id"]) == (truth["decoy"]["host"], truth["decoy"]["id"])
    history = first(duck, "host").dicts()
    assert {r["stack_id"] for r in history if r["rank"] == 1} == {leak["id"]}
    assert len({r["time"] for r in history}) == SNAPSHOTS


def questions_with(tables: dict, question: str, key) -> list[dict]:
    return next(t for (q, kw), t in tables.items() if q == question and (key in json.loads(kw)) == (key is not None)
                ).dicts()


def test_the_command_answers_and_draws(fleet, tmp_path):
    root, truth = fleet
    proc = inspect("fleet", "top", str(root), "--limit", "3", "--stacks")
    assert truth["leak"]["id"] in proc.stdout.splitlines()[3]  # the first row under the header
    assert "shmem_fallocate" in proc.stdout
    png = tmp_path / "leak.png"
    doc = json.loads(inspect("fleet", "plot", str(root), "-o", str(png), "--limit", "4", "--json").stdout)
    assert png.stat().st_size > 10000 and len(doc["plot"]) == 4
    assert {line["host"].split()[0] for line in doc["plot"]} <= set(truth["leak"]["hosts"])
    assert all(len(line["y"]) == SNAPSHOTS for line in doc["plot"])


def test_bad_files_are_named_and_left_out(fleet, tmp_path):
    root, truth = fleet
    bad = tmp_path / "fleet"
    shutil.copytree(root, bad)
    good = sorted(bad.rglob("*.parquet"))[0]
    (bad / "host=x" / "kernel=y" / "date=2026-11-01").mkdir(parents=True)
    part = bad / "host=x" / "kernel=y" / "date=2026-11-01"
    (part / "truncated.parquet").write_bytes(good.read_bytes()[:300])
    (part / "text.parquet").write_text("not parquet\n")
    pq.write_table(pa.table({"x": [1]}), part / "foreign.parquet")
    meta = json.loads(pq.read_metadata(good).metadata[snapshot.META_KEY])
    snapshot.write_table(pq.read_table(good), dict(meta, schema=snapshot.SCHEMA_VERSION + 1),
                         str(part / "newer.parquet"))
    proc = inspect("fleet", "top", str(bad), "--limit", "1", check_rc=3)
    assert "Traceback" not in proc.stderr and truth["leak"]["id"] in proc.stdout
    lines = proc.stderr.splitlines()
    for name, says in (("truncated", "truncated or corrupt Parquet"), ("text", "no PAR1 magic"),
                       ("foreign", "not a pageext-inspect snapshot"), ("newer", "newer pageext-inspect")):
        assert [ln for ln in lines if f"{name}.parquet" in ln and says in ln and "left out" in ln
                and ln.startswith("pageext-inspect: partial: ")], (name, proc.stderr)
    assert "4 left out" in proc.stdout
    # Every file bad: one line, exit 2.
    only = tmp_path / "only"
    shutil.copytree(part, only)
    assert "no snapshot to read" in inspect("fleet", "top", str(only), check_rc=2).stderr


def test_single_and_compacted_files_answer_alike(fleet, tmp_path):
    """A fleet mixes what tools wrote: a watch's compacted hour (format
    'snapshots', a ``part`` column) beside single snapshots."""
    root, truth = fleet
    mixed = tmp_path / "mixed"
    shutil.copytree(root, mixed)
    host = truth["leak"]["hosts"][0]
    files = sorted((mixed / f"host={host}").rglob("*.parquet"))
    snapshot.compact([str(f) for f in files], str(mixed / f"host={host}" / "compacted.parquet"))
    assert len(sorted((mixed / f"host={host}").rglob("*.parquet"))) == 1
    assert duckdb_answers(mixed, truth) == duckdb_answers(root, truth)


def test_layout_and_parameters():
    meta = {"machine": "web/3=a b", "release": "6.12.0-unit", "time_ns": 1_795_000_000_000_000_000}
    path = layout.file_path("/f", meta)
    assert path.startswith("/f/host=web%2F3%3Da%20b/kernel=6.12.0-unit/date=2026-11-18/")
    assert layout.partitions(path, "/f") == {"host": "web/3=a b", "kernel": "6.12.0-unit", "date": "2026-11-18"}
    for bad in ({"host": "a'b"}, {"stack": "x y"}):
        with pytest.raises(Exception, match="bad --"):
            questions.sql("host", **dict({"host": "h"}, **bad))
    assert "needs --host" in inspect("fleet", "host", str(ROOT), check_rc=2).stderr
    assert "one of: duckdb, spark" in inspect("fleet", "top", str(ROOT), "--engine", "presto", check_rc=2).stderr
    assert "--fleet DIR" in inspect("snapshot", "--fleet", "/tmp/x", "-o", "y.parquet", check_rc=2).stderr


# -- Spark --------------------------------------------------------------------------------------------

def spark_why():
    """Why the Spark tests do not run, or None.  They run when asked
    (PAGEEXT_SPARK=1, as scripts/setup.sh installs Spark then), because a
    JVM and Spark's jobs on a 2-core machine take minutes (README: The fleet)."""
    if os.environ.get("PAGEEXT_SPARK") != "1":
        return "the Spark tests run with PAGEEXT_SPARK=1 (PAGEEXT_SPARK=1 scripts/test.sh tests/test_fleet.py)"
    missing = engines.spark_missing()
    return f"Spark unavailable: {missing}" if missing else None


spark = pytest.mark.skipif(spark_why() is not None, reason=str(spark_why()))


@spark
@pytest.mark.spark
def test_spark_gives_duckdbs_tables_for_every_question(duck, fleet):
    root, truth = fleet
    eng = engines.Spark()
    try:
        sp = answers(eng, root, truth)
    finally:
        eng.close()
    assert sp.keys() == duck.keys()
    for key in duck:
        assert sp[key].columns == duck[key].columns, key
        assert sp[key].rows == duck[key].rows, key
        assert sp[key].rows, key
    assert first(sp, "top").rows[0][0] == truth["leak"]["id"]


@spark
@pytest.mark.spark
def test_spark_command_names_bad_files_too(fleet, tmp_path):
    root, truth = fleet
    small = tmp_path / "small"
    for d in sorted(root.glob("host=*"))[:20] + [root / f"host={truth['leak']['hosts'][0]}"]:
        shutil.copytree(d, small / d.name, dirs_exist_ok=True)
    (small / "junk.parquet").write_text("junk\n")
    proc = inspect("fleet", "top", str(small), "--engine", "spark", "--limit", "1", check_rc=3)
    assert truth["leak"]["id"] in proc.stdout and "Traceback" not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if "junk.parquet" in ln and "left out" in ln]
    assert not [ln for ln in proc.stderr.splitlines() if "WARN" in ln or "log4j" in ln]  # the JVM's chatter: its log
