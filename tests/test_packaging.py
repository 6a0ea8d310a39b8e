"""An installed copy works from anywhere: the scenarios and the BPF program ship as package data.

``pip install .`` into a directory of its own, then the package from there
(first on sys.path, ahead of the development checkout) run from an
unrelated working directory: the recorded scenarios load, ``--record``
writes where it is told, and nothing points at the checkout's scripts/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("installed")
    # A clean copy of the source: setuptools builds in the source's build/,
    # and files a module move left there (clients/engine.py before it became
    # decode/engine.py) would be installed too.
    src = tmp_path_factory.mktemp("source") / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                              ".pytest_cache"))
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return target


def run(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(installed))
    return subprocess.run([sys.executable, "-m", "inspector", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_installed_copy_simulates_and_records_anywhere(installed, tmp_path):
    where = run(installed, tmp_path, "simulate", "--help")
    assert where.returncode == 0
    proc = run(installed, tmp_path, "simulate", "hot-add-online")
    assert proc.returncode == 0, proc.stderr
    assert "allocated 18874368 bytes of page_ext" in proc.stdout  # 8 boot sections of 32768 x 72 bytes
    out = tmp_path / "mine.json"
    proc = run(installed, tmp_path, "simulate", "boot-2-nodes", "--record", str(out))
    assert proc.returncode == 0 and out.stat().st_size > 1000, proc.stderr
    from_where = subprocess.run([sys.executable, "-c", "import inspector; print(inspector.__file__)"],
                                cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(installed)),
                                capture_output=True, text=True).stdout
    assert from_where.startswith(str(installed)), from_where


def test_installed_copy_has_the_bpf_program_and_no_checkout_paths(installed):
    assert (installed / "inspector" / "trace" / "bpf.c").read_text().startswith("/*")
    assert sorted(p.name for p in (installed / "inspector" / "sim" / "recorded").glob("*.json"))
    demo = installed / "inspector" / "demo"  # pageext-inspect demo: the shipped core (issue 20)
    assert [(demo / n).stat().st_size > 1000 for n in ("vmcore", "vmlinux.debug.xz", "demo.json")] == [True] * 3
    for py in (installed / "inspector").rglob("*.py"):
        for line in py.read_text().splitlines():
            code = line.split("#", 1)[0]
            assert "scripts/" not in code or '"""' in line, f"{py}: {line.strip()}"


def test_installed_metadata_is_fit_for_a_public_index(installed, tmp_path):
    """The installed distribution names its version, licence, classifiers and
    the pageext-inspect entry point; python -m inspector --version agrees (issue 20)."""
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dist = next(installed.glob("pageext_inspect-*.dist-info"))
    meta = (dist / "METADATA").read_text()
    assert f"Version: {project['version']}\n" in meta and "License: GPL-2.0-or-later" in meta
    assert "Classifier: Operating System :: POSIX :: Linux" in meta and "Requires-Python: >=3.11" in meta
    assert "pageext-inspect = inspector.cli:main" in (dist / "entry_points.txt").read_text()
    proc = run(installed, tmp_path, "--version")
    assert proc.returncode == 0 and proc.stdout.splitlines()[0] == f"pageext-inspect {project['version']}"
