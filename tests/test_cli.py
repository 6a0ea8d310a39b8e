"""The CLI's bad-input paths that need no kernel: one line on stderr, exit 2."""

from __future__ import annotations

from conftest import inspect


def one_error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_missing_vmcore(tmp_path):
    assert "no such file" in one_error_line(inspect(str(tmp_path / "nope"), check_rc=2))


def test_garbage_vmcore(tmp_path):
    f = tmp_path / "garbage"
    f.write_bytes(b"\x00" * 4096)
    assert "not a usable vmcore" in one_error_line(inspect(str(f), check_rc=2))


def test_short_file(tmp_path):
    f = tmp_path / "short"
    f.write_text("hello")
    assert "too short" in one_error_line(inspect(str(f), check_rc=2))


def test_truncated_elf_headers(tmp_path):
    f = tmp_path / "trunc.elf"
    # An ELF64 header announcing 4 program headers at offset 64, then nothing.
    hdr = bytearray(64)
    hdr[:4] = b"\x7fELF"; hdr[4] = 2; hdr[5] = 1; hdr[6] = 1
    hdr[16] = 4  # ET_CORE
    hdr[32:40] = (64).to_bytes(8, "little")
    hdr[54:56] = (56).to_bytes(2, "little"); hdr[56:58] = (4).to_bytes(2, "little")
    f.write_bytes(bytes(hdr))
    assert "truncated" in one_error_line(inspect(str(f), check_rc=2))


def test_vmlinux_not_elf(tmp_path):
    core, vml = tmp_path / "core", tmp_path / "vmlinux"
    core.write_bytes(b"\x7fELF" + b"\x00" * 100)
    vml.write_text("not elf")
    assert "not an ELF file" in one_error_line(inspect(str(core), "-s", str(vml), check_rc=2))


def test_both_core_and_qemu(tmp_path):
    assert "not both" in one_error_line(inspect(str(tmp_path), "--qemu", "x", check_rc=2))


def test_missing_qmp_socket(tmp_path):
    assert "no such QMP socket" in one_error_line(inspect("--qemu", str(tmp_path / "q.sock"), check_rc=2))


def test_help_has_examples():
    out = inspect("--help").stdout
    assert "Examples:" in out and "--qemu" in out and "vmcore -s vmlinux" in out


# -- first contact: the habits users bring from drgn (issue 20) ---------------------------------------

def test_version_names_the_tool_drgn_and_bcc():
    import tomllib

    import drgn
    from conftest import ROOT
    proc = inspect("--version")
    lines = proc.stdout.splitlines()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert lines[0] == f"pageext-inspect {project}" and lines[1] == f"drgn {drgn.__version__}"
    assert lines[2].startswith("bcc ") and len(lines) == 3 and proc.stderr == ""


def test_a_mistyped_command_gets_a_suggestion():
    for argv in (("ownr",), ("ownr", "vmcore"), ("snapshto", "/proc/kcore")):
        proc = inspect(*argv, check_rc=2)
        want = {"ownr": "owner", "snapshto": "snapshot"}[argv[0]]
        assert proc.stderr == (f"pageext-inspect: error: no such command {argv[0]!r}; did you mean {want!r}? "
                               "(try 'pageext-inspect --help')\n") and proc.stdout == ""


def test_a_file_named_like_a_command_is_still_a_target(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ownr").write_bytes(b"not a core")
    proc = inspect("ownr", check_rc=2)
    assert "did you mean" not in proc.stderr and "ownr: too short to be a vmcore" in proc.stderr


def test_drgn_core_options(tmp_path):
    missing = str(tmp_path / "vmcore")
    for argv in (("-c", missing), ("--core", missing), (f"--core={missing}",), ("owner", "-c", missing, "-s", "x")):
        proc = inspect(*argv, check_rc=2)
        assert proc.stderr.count("\n") == 1, proc.stderr
    assert inspect("-c", missing, check_rc=2).stderr == f"pageext-inspect: error: {missing}: no such file\n"


def test_a_socket_given_as_target_points_at_qemu(tmp_path):
    import socket
    path = str(tmp_path / "qmp.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    try:
        proc = inspect(path, check_rc=2)
    finally:
        s.close()
    assert proc.stderr.count("\n") == 1 and f"use --qemu {path}" in proc.stderr


def test_retries_is_on_every_command_that_reads_a_live_kernel():
    """--retries means one thing and is offered wherever a live target is read
    (issue 20); watch samples a changing kernel on purpose and has none."""
    from inspector.commands import all_commands
    for name, cmd in all_commands().items():
        text = inspect(name, "--help").stdout
        assert ("--retries" in text) == (cmd.target and name != "watch"), name
