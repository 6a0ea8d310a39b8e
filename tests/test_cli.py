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
