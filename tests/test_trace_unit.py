"""trace's refusals that need no VM: the real CLI entry point, a faked environment."""

from __future__ import annotations

import os

import pytest

from inspector import cli


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr("sys.argv", ["pageext-inspect", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    return exc.value.code, capsys.readouterr().err


def test_not_root_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    code, err = run_main(monkeypatch, capsys, "trace", "--duration", "1")
    assert code == 2
    assert err == "pageext-inspect: error: trace needs root (it loads BPF programs and kprobes): run it with sudo\n"


def test_bad_probes_value_is_one_line(monkeypatch, capsys):
    code, err = run_main(monkeypatch, capsys, "trace", "--probes", "sideways")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--probes" in err
