"""The same inspector checks on Debian's 6.12 (linux-source-6.12), built from the same fragments
(plus fixtures/kernel/alloc-tags.config: allocation profiling, a third client).

6.12 differs from 6.1 where the walker must not care: page_ext_size starts at
0 and grows by sizeof(struct page_ext) only for need_shared_flags clients
(v6.3, 6189eb82f0ae), struct page_owner gained free_pid/free_tgid (v6.8),
and page_alloc_tagging's 8-byte tag reference sits between page_owner and
page_table_check (page_ext_ops[] order), so the entry is 88 bytes (8 + 64 +
8 + 8) instead of 6.1's 72.  Nothing here is told that: the expected numbers
come from the 6.12 kernel's own dmesg and sysfs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CLIENTS_ON
from testvm import TestVM

import test_vm_inspect as core

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def vm612(kernel612, tmp_path_factory):
    with TestVM(kernel612, cmdline=CLIENTS_ON, workdir=str(tmp_path_factory.mktemp("vm612"))) as machine:
        yield machine


def test_612_boot_layout_matches_the_kernel(vm612, kernel612):
    core.test_boot_layout_matches_the_kernel(vm612, str(kernel612 / "vmlinux"))


def test_612_clients_agree_with_the_kernel(vm612, kernel612):
    core.test_clients_agree_with_the_kernel(vm612, str(kernel612 / "vmlinux"))


def test_612_hot_add_on_node1(vm612, kernel612):
    core.test_hot_add_on_node1_adds_exactly_its_sections(vm612, str(kernel612 / "vmlinux"))


def test_612_hot_remove(vm612, kernel612):
    core.test_hot_remove_frees_the_tables(vm612, str(kernel612 / "vmlinux"))
