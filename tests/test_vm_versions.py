"""The inspector's core checks on every other kernel this run covers (issue 18).

tests/test_vm_inspect.py runs them on the main 6.1 kernel; this module runs
the same functions on each other version in :func:`conftest.kernels` -- by
default 6.12 and 7.3 (CI), with PAGEEXT_KERNELS=all also 5.10 and 7.2 --
each built from Debian's linux-source-VERSION with the fragments in
conftest.FRAGMENTS_BY_VERSION.

The versions differ where the walker must not care: page_ext_size starts at 0
and grows by sizeof(struct page_ext) only for need_shared_flags clients
(v6.3, 6189eb82f0ae), struct page_owner gained free_pid/free_tgid (v6.8),
page_alloc_tagging's 8-byte tag reference sits between page_owner and
page_table_check (page_ext_ops[] order; 6.10+), 7.x compiles in a fifth
client, page_iommu_debug (v7.0, off unless booted with
iommu.debug_pagealloc=1), and 5.10 has neither page_table_check (v5.17) nor
PAGE_EXT_INVALID (v6.1).  Nothing here is told any of that: the expected
numbers come from each kernel's own dmesg and sysfs.
"""

from __future__ import annotations

import pytest

from conftest import CLIENTS_ON, kernel_for, kernels
from testvm import TestVM

import test_vm_inspect as core

pytestmark = pytest.mark.vm

OTHERS = [v for v in kernels() if v != "6.1"]


@pytest.fixture(scope="module", params=OTHERS)
def other(request, tmp_path_factory):
    """(booted guest, vmlinux path) of one other kernel version."""
    kdir = kernel_for(request.param)
    with TestVM(kdir, cmdline=CLIENTS_ON, workdir=str(tmp_path_factory.mktemp(f"vm{request.param}"))) as machine:
        yield machine, str(kdir / "vmlinux")


def test_boot_layout_matches_the_kernel(other):
    core.test_boot_layout_matches_the_kernel(*other)


def test_clients_agree_with_the_kernel(other):
    core.test_clients_agree_with_the_kernel(*other)


def test_hot_add_on_node1(other):
    core.test_hot_add_on_node1_adds_exactly_its_sections(*other)


def test_hot_remove(other):
    core.test_hot_remove_frees_the_tables(*other)
