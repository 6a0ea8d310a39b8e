"""arm64 without a VM: the simulator's arm64 geometries against a real arm64 guest, and the
platform of a QEMU kdump file that names no machine.

fixtures/arm64/measured.json holds what the arm64 6.12 test guests printed and
their kernels' DWARF said (see its ``_source``); the simulator, given the same
memory map (scenarios boot-arm64-4k/-64k) and geometry, must print the same
boot line.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import drgn
import pytest

from inspector.sim import scenarios
from inspector.target import _elf_platform
from inspector.versions import GEOMETRIES

MEASURED = json.loads((Path(__file__).resolve().parent.parent / "fixtures" / "arm64" / "measured.json").read_text())
MEASURED.pop("_source")


@pytest.mark.parametrize("geo", sorted(MEASURED))
def test_simulated_boot_line_is_the_arm64_guests(geo):
    m = MEASURED[geo]
    g = GEOMETRIES[geo]
    assert (g.page_shift, g.section_size_bits) == (m["page_shift"], m["section_size_bits"])
    assert m["block_size_bytes"] == 1 << g.section_size_bits  # a memory block is one section on arm64
    doc = scenarios.load(f"boot-{geo}")
    sizes = {c["name"]: c["size"] for c in doc["input"]["clients"]}
    assert sizes == {"page_owner": m["sizeof_page_owner"], "page_table_check": m["sizeof_page_table_check"]}
    result = scenarios.run(doc)
    assert result.dmesg == m["dmesg"]
    assert result.layout.page_size == 1 << m["page_shift"]
    assert result.layout.entry_size == m["sizeof_page_ext"] + sum(sizes.values())


def _elf_header(machine: int) -> bytes:
    return b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack("<HH", 2, machine)


@pytest.mark.parametrize("machine, arch", [(183, drgn.Architecture.AARCH64), (62, drgn.Architecture.X86_64),
                                           (3, drgn.Architecture.I386)])
def test_a_vmlinux_names_its_architecture(tmp_path, machine, arch):
    """QEMU 7.2 writes an arm64 guest's kdump header with machine "Unknown":
    the vmlinux's e_machine decides the platform then (inspector.target)."""
    f = tmp_path / "vmlinux"
    f.write_bytes(_elf_header(machine) + bytes(64))
    assert _elf_platform(str(f)).arch == arch


def test_not_an_elf_names_nothing(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"not an ELF file at all")
    assert _elf_platform(str(f)) is None and _elf_platform(str(tmp_path / "missing")) is None
