"""scripts/matrix.py: test results (JUnit XML) to the README's kernel x feature table."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

BUILT = """<?xml version="1.0"?><testsuites><testsuite>
<testcase classname="tests.test_vm_owner" name="test_debugfs_text_matches_the_kernel[6.1]"/>
<testcase classname="tests.test_vm_owner" name="test_debugfs_text_matches_the_kernel[7.3]"><failure message="boom"/></testcase>
<testcase classname="tests.test_vm_owner" name="test_one_pfn[7.3]"/>
<testcase classname="tests.test_vm_versions" name="test_hot_add_on_node1[7.3]"/>
<testcase classname="tests.test_vm_inspect" name="test_hot_remove_frees_the_tables"/>
<testcase classname="tests.test_vm_versions" name="test_clients_agree_with_the_kernel[5.10]">
  <skipped message="not in this kernel: page_table_check is v5.17"/></testcase>
<testcase classname="tests.test_vm_alloc_tags" name="test_tmpfs_fill_is_tagged_at_shmem"/>
<testcase classname="tests.test_vm_page_idle" name="test_bitmap_equals_the_kernels"/>
<testcase classname="tests.test_vm_7x_decode" name="test_table_check_agrees_with_pagemap"/>
<testcase classname="tests.test_vm_7x_clients" name="test_trace_names_the_node_of_a_hot_add"/>
<testcase classname="tests.test_vm_owner" name="test_page_table_check_counts_agree_with_pagemap_and_rmap[6.1]"/>
<testcase classname="tests.test_vm_owner" name="test_memcg_lines_are_the_kernels[6.12]"><skipped message="6.12: memory controller off"/></testcase>
<testcase classname="tests.test_vm_owner" name="test_612_memcg_oops_and_we_still_read_the_dump"/>
<testcase classname="tests.test_cli" name="test_help"/>
</testsuite></testsuites>"""
STOCK = """<?xml version="1.0"?><testsuites><testsuite>
<testcase classname="tests.test_vm_distro" name="test_stock_kernel_reports_compiled_in_nothing_allocated"/>
</testsuite></testsuites>"""


def test_cells_from_results(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import matrix
    (tmp_path / "built.xml").write_text(BUILT)
    (tmp_path / "stock-7.2.xml").write_text(STOCK)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- matrix:begin -->\nold table\n<!-- matrix:end -->\nafter\n")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "matrix.py"), "--readme", str(readme),
                           "--seconds", "600", str(tmp_path / "built.xml"), str(tmp_path / "stock-7.2.xml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    doc = readme.read_text()
    assert doc.startswith("intro\n<!-- matrix:begin -->\n") and doc.endswith("<!-- matrix:end -->\nafter\n")
    assert "old table" not in doc and "10 min" in doc
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in doc.splitlines() if line.startswith("| ") and not line.startswith("| feature")}
    header = next(line for line in doc.splitlines() if line.startswith("| feature"))
    cols = [c.strip() for c in header.split("|")[2:-1]]
    assert cols == ["5.10", "6.1", "6.12", "7.3", "stock 7.2", "i386 6.1"]
    row = dict(zip(cols, rows["owner --format debugfs"]))
    assert row == {"5.10": "-", "6.1": "Y", "6.12": "-", "7.3": "N (1/2)", "stock 7.2": "n/a",
                   "i386 6.1": "-"}
    assert dict(zip(cols, rows["stock kernel: page_ext empty, owner refuses"]))["6.1"] == "n/a"
    assert dict(zip(cols, rows["hot-add / hot-remove exact"]))["7.3"] == "Y"
    assert dict(zip(cols, rows["hot-add / hot-remove exact"]))["6.1"] == "Y"
    assert dict(zip(cols, rows["locate + verify, live QMP"]))["5.10"] == "not in this kernel: page_table_check is v5.17"
    assert dict(zip(cols, rows["alloc-tags vs /proc/allocinfo"]))["6.12"] == "Y"
    assert dict(zip(cols, rows["stock kernel: page_ext empty, owner refuses"]))["stock 7.2"] == "Y"
    # The 7.x modules (test_vm_7x_decode, _clients) have their rows, on 7.3.
    assert dict(zip(cols, rows["table-check"])) == {"5.10": "-", "6.1": "Y", "6.12": "-", "7.3": "Y",
                                                    "stock 7.2": "n/a", "i386 6.1": "-"}
    assert dict(zip(cols, rows["trace (bcc)"]))["7.3"] == "Y"
    # 6.12's memcg lines: its own text oopses (skipped), the oops test reads the dump (6.12's, not 6.1's).
    assert dict(zip(cols, rows["memcg lines"]))["6.12"] == "Y"
    assert dict(zip(cols, rows["memcg lines"]))["6.1"] == "-"
    # page_idle is in page_ext on 32-bit only: its own column, not in this kernel on the 64-bit ones.
    idle = dict(zip(cols, rows["page-idle"]))
    assert idle.pop("i386 6.1") == "Y" and idle.pop("stock 7.2") == "n/a"
    assert set(idle.values()) == {matrix.PAGE_IDLE_64BIT}


def test_missing_file_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "matrix.py"), str(tmp_path / "nope.xml")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no such file" in proc.stderr


def test_arm64_cases_have_their_own_columns():
    """tests/test_vm_arm64.py's ids carry the page size (6.12) or the version and page size (7.3-4k):
    one column each, every one of them in KERNELS."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import matrix
    cases = {"test_kdump_top_names_the_planted_leak_first[64k]": ("ELF and kdump dumps, kdump capture", "6.12 64K"),
             "test_hot_remove_under_uefi_follows_the_block_states[4k]": ("hot-add / hot-remove exact", "6.12 4K"),
             "test_owner_debugfs_is_the_kernels_page_owner[4k-elf]": ("owner --format debugfs", "6.12 4K"),
             "test_top_is_the_sum_of_the_kernels_page_owner[64k-pid]": ("top vs page_owner_sort / page_owner_stacks",
                                                                        "6.12 64K"),
             "test_total_is_the_kernels_boot_line_and_total_usage[64k-qmp]": ("locate + verify, live QMP", "6.12 64K"),
             "test_hot_add_under_uefi_is_exact[7.3-4k]": ("hot-add / hot-remove exact", "7.3 4K"),
             "test_owner_debugfs_is_the_kernels_page_owner[7.3-64k-elf]": ("owner --format debugfs", "7.3 64K"),
             "test_table_check_agrees_with_pagemap_and_rmap[64k-kdump]": ("table-check", "6.12 64K"),
             "test_owner_debugfs_is_the_kernels_page_owner[7.3-64k-kdump]": ("owner --format debugfs", "7.3 64K"),
             "test_kdump_top_names_the_planted_leak_first[7.3-64k]": ("ELF and kdump dumps, kdump capture",
                                                                     "7.3 64K")}
    for name, (feature, kernel) in cases.items():
        assert (matrix.feature_of("test_vm_arm64", name), matrix.kernel_of("test_vm_arm64", name, None)) == \
            (feature, f"arm64 {kernel}"), name
        assert f"arm64 {kernel}" in matrix.KERNELS


def test_a_rerun_given_later_supersedes(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import matrix
    case = '<testcase classname="tests.test_vm_drgn" name="test_helpers_answer_as_the_kernel_does[6.1]"'
    (tmp_path / "run.xml").write_text('<testsuite>' + case + '><failure message="x"/></testcase></testsuite>')
    (tmp_path / "rerun.xml").write_text('<testsuite>' + case + '/></testsuite>')
    cells = matrix.read([tmp_path / "run.xml", tmp_path / "rerun.xml"])
    assert cells[("drgn plugin", "6.1")] == [("passed", "")]
    cells = matrix.read([tmp_path / "rerun.xml", tmp_path / "run.xml"])
    assert cells[("drgn plugin", "6.1")] == [("failure", "x")]


def test_a_later_skip_does_not_hide_a_result(tmp_path):
    """CI skips arm64 64K (not in its build); the matrix run that had it keeps its cell."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import matrix
    drgn_case(tmp_path / "run.xml", "6.1", "")
    drgn_case(tmp_path / "ci.xml", "6.1", '<skipped message="not in CI\'s build"/>')
    assert matrix.read([tmp_path / "run.xml", tmp_path / "ci.xml"])[("drgn plugin", "6.1")] == [("passed", "")]
    # A skip alone still counts, and a later result still supersedes a skip.
    assert matrix.read([tmp_path / "ci.xml"])[("drgn plugin", "6.1")] == [("skipped", "not in CI's build")]
    assert matrix.read([tmp_path / "ci.xml", tmp_path / "run.xml"])[("drgn plugin", "6.1")] == [("passed", "")]


def test_not_in_this_kernel_supersedes_an_older_failure(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import matrix
    drgn_case(tmp_path / "old.xml", "5.10", '<failure message="x"/>')
    drgn_case(tmp_path / "new.xml", "5.10", '<skipped message="not in this kernel: v5.11"/>')
    assert matrix.read([tmp_path / "old.xml", tmp_path / "new.xml"])[("drgn plugin", "5.10")] == \
        [("skipped", "not in this kernel: v5.11")]


def drgn_case(path, kernel: str, outcome: str) -> None:
    """A JUnit file holding one test_vm_drgn case on ``kernel`` with ``outcome`` ("" = passed)."""
    path.write_text('<testsuite><testcase classname="tests.test_vm_drgn" '
                    f'name="test_helpers_answer_as_the_kernel_does[{kernel}]">{outcome}</testcase></testsuite>')
