"""The two engines that answer the fleet's questions: DuckDB in-process, and Spark.

Design.  An engine does two things: it puts the files a scan kept
(:func:`.layout.scan`) behind the view ``fleet``, and it runs a question's
SQL text (:mod:`.questions`) and hands back the table.  Only the view is
engine-specific -- DuckDB reads the files with ``read_parquet([...])``,
Spark with ``spark.read.parquet(*paths)`` (``recursiveFileLookup``, so it
infers no partitions and the rows' own ``machine``/``release`` are the
truth), both with the files of each schema version mapped onto the fleet's
columns by the same SELECT list (:data:`.layout.COLUMNS`), and the offsets
stripped from the frames with each one's own ``regexp_replace`` (DuckDB's
replaces every match only with its ``'g'`` option, Spark's always does).
The questions then run as the same text on both.

The table comes back normalized the same way for both: timestamps as UTC
ISO text, integers as Python ints, floats to 6 significant digits (a
standard deviation summed in another order differs in the last bits, not
in those).  Both engines run in UTC.

Spark: ``local[*]`` by default (a JVM on this machine, every core), or a
cluster's ``--master URL``; there the paths must be on storage every
executor sees at the same path.  pyspark is the optional ``[spark]`` extra
and needs a Java runtime (the checkout's setup.sh installs Debian's headless JRE
when PAGEEXT_SPARK=1); without either, one line says so (exit 2).
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import sys
import tempfile
from typing import Optional

from ..errors import UsageError
from .layout import COLUMNS, Scan

ENGINES = ("duckdb", "spark")
STRIP = "'[+]0x[0-9a-f]+/0x[0-9a-f]+'"  # "f+0x1e7/0x65d [mod]" -> "f [mod]"
# The fleet's table, read once from the files: the stack rows (the questions
# ask about stacks, not tasks), each stack's frames without offsets reduced
# to its id (first 12 hex digits of their MD5), so the table a question
# scans holds no stack text.
TABLE = ("SELECT schema_version, kind, host, kernel, boot_id, time, substr(md5(frames), 1, 12) AS stack_id, "
         "top_frame, pages, allocations "
         "FROM (SELECT fleet_rows.*, {strip} AS frames FROM fleet_rows WHERE kind = 'stack') r")
# A stack's frames (offsets stripped) by its id, read again from the files when asked.
FRAMES = ("SELECT stack_id, min(frames) AS frames FROM (SELECT substr(md5(frames), 1, 12) AS stack_id, frames "
          "FROM (SELECT {strip} AS frames FROM fleet_rows WHERE kind = 'stack') a) b "
          "WHERE stack_id IN ({ids}) GROUP BY stack_id")


def _select(version: int) -> list[str]:
    return [f"{version} AS schema_version"] + [f"{expr} AS {name}" for name, expr in COLUMNS[version].items()]


def _value(v):
    if isinstance(v, _dt.datetime):
        return v.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # naive: local time (pyspark's)
    if isinstance(v, float):
        return float(f"{v:.6g}")
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int) or hasattr(v, "__int__"):
        return int(v)
    return v


class Table:
    """A question's answer: column names and rows (tuples), normalized."""

    def __init__(self, columns: list[str], rows: list[tuple]):
        self.columns = list(columns)
        self.rows = [tuple(_value(v) for v in r) for r in rows]

    def dicts(self) -> list[dict]:
        return [dict(zip(self.columns, r)) for r in self.rows]

    def __eq__(self, other) -> bool:
        return isinstance(other, Table) and (self.columns, self.rows) == (other.columns, other.rows)


class _Engine:
    strip = ""

    def frames(self, ids) -> dict:
        """{stack_id: its frames (offsets stripped)} for the ids given, read again from the files."""
        ids = [i for i in ids if i]
        if not ids:
            return {}
        return {r[0]: r[1] for r in self.query(FRAMES.format(strip=self.strip,
                                                             ids=", ".join(f"'{i}'" for i in ids))).rows}


class DuckDB(_Engine):
    name = "duckdb"
    strip = f"regexp_replace(stack, {STRIP}, '', 'g')"

    def __init__(self) -> None:
        import duckdb
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET enable_progress_bar = false")

    def load(self, scan: Scan) -> None:
        parts = []
        for version, paths in sorted(scan.groups.items()):
            files = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
            parts.append(f"SELECT {', '.join(_select(version))} FROM read_parquet({files}, union_by_name = true, "
                         "hive_partitioning = false)")
        self.con.execute("CREATE OR REPLACE TEMP VIEW fleet_rows AS " + " UNION ALL ".join(parts))
        self.con.execute("CREATE OR REPLACE TEMP TABLE fleet AS " + TABLE.format(strip=self.strip))

    def query(self, text: str) -> Table:
        cur = self.con.execute(text)
        return Table([d[0] for d in cur.description], cur.fetchall())

    def close(self) -> None:
        self.con.close()


def java() -> Optional[str]:
    """The java a local Spark would start, or None."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    return shutil.which("java")


def spark_missing() -> Optional[str]:
    """Why Spark cannot run here (one line), or None."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed: pip install 'pageext-inspect[spark]' (or PAGEEXT_SPARK=1 setup.sh in a checkout)"
    if java() is None:
        return "Spark needs a Java runtime and none was found (no JAVA_HOME, no java on PATH): apt-get install " \
               "default-jre-headless (or PAGEEXT_SPARK=1 setup.sh in a checkout)"
    return None


class Spark(_Engine):
    name = "spark"
    strip = f"regexp_replace(stack, {STRIP}, '')"

    def __init__(self, master: Optional[str] = None) -> None:
        why = spark_missing()
        if why:
            raise UsageError(why)
        from pyspark.sql import SparkSession
        builder = (SparkSession.builder.master(master or "local[*]").appName("pageext-inspect fleet")
                   .config("spark.sql.session.timeZone", "UTC")
                   .config("spark.ui.enabled", "false")
                   .config("spark.ui.showConsoleProgress", "false")
                   .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
                   # Few, small shuffles: one partition per core, not Spark's 200 (AQE coalesces further).
                   .config("spark.sql.shuffle.partitions",
                           os.environ.get("PAGEEXT_SPARK_PARTITIONS", str(os.cpu_count() or 2)))
                   .config("spark.sql.sources.parallelPartitionDiscovery.threshold", "1000000")
                   .config("spark.log.level", "ERROR")
                   .config("spark.driver.memory", os.environ.get("PAGEEXT_SPARK_MEMORY", "2g")))
        # The JVM's own chatter (log4j's start-up lines, Java's warnings) goes
        # to a log file, not to our stderr: the JVM inherits fd 2 as it is now.
        self.log = os.path.join(tempfile.gettempdir(), f"pageext-spark-{os.getpid()}.log")
        sys.stderr.flush()
        saved, fd = os.dup(2), os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.dup2(fd, 2)
            self.spark = builder.getOrCreate()
        except Exception as e:
            raise UsageError(f"Spark did not start ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}); "
                             f"its log: {self.log}") from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(fd)
        self.spark.sparkContext.setLogLevel("ERROR")

    def load(self, scan: Scan) -> None:
        df = None
        for version, paths in sorted(scan.groups.items()):
            part = (self.spark.read.option("recursiveFileLookup", "true")
                    .parquet(*paths).selectExpr(*_select(version)))
            df = part if df is None else df.unionByName(part)
        df.createOrReplaceTempView("fleet_rows")
        table = self.spark.sql(TABLE.format(strip=self.strip)).cache()
        table.count()  # read the files now, once
        table.createOrReplaceTempView("fleet")

    def query(self, text: str) -> Table:
        df = self.spark.sql(text)
        return Table(df.columns, [tuple(r) for r in df.collect()])

    def close(self) -> None:
        self.spark.stop()
        try:
            os.unlink(self.log)
        except OSError:
            pass


def engine(name: str, master: Optional[str] = None):
    """A new engine by name (``duckdb`` or ``spark``)."""
    if name not in ENGINES:
        raise UsageError(f"unknown --engine {name!r} (one of: {', '.join(ENGINES)})")
    if master and name != "spark":
        raise UsageError("--master names a Spark cluster: it goes with --engine spark")
    return DuckDB() if name == "duckdb" else Spark(master)
