"""The JSON conventions of README's "JSON output" section (issue 20), on the
recorded fixture (the synthetic kernel of the ``boot-2-nodes`` scenario, as
tests/test_doctests.py uses it) through the same Context the drgn front end
gives a command, and over the source for what a fixture cannot show:

* one indentation (one space) in every command's JSON document; JSON Lines
  (``owner --json``) one record a line;
* ``missing`` in every command's document that reads a kernel;
* the same key for the same fact: ``clients``' ``active`` is ``inspect``'s
  ``page_ext.clients[].active``; a count of samples is ``sample_count``
  (``plot``), ``samples`` the list of them (``watch``); ``simulate``'s
  sections say ``section`` and ``page_ext`` as ``inspect``'s do;
* 64-bit quantities (the keys of inspector.jsonout.HEX_KEYS) are "0x..."
  strings, in the output and in every schema;
* one JSON Schema per command with ``--json`` (inspector/schemas/), checked
  here against real output where no VM is needed (the fixture, the
  simulator, the recorded traces, the fleet and history fixtures) and in the
  VM module that runs the command otherwise (owner, top, table-check,
  alloc-tags, page-idle, snapshot, watch).

What the tables hold is checked against the recording (the oracle), not
against the tool's own output."""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ROOT

SOURCES = sorted((ROOT / "inspector" / "commands").glob("*.py")) + [ROOT / "inspector" / "report.py"]


@pytest.fixture(scope="module")
def fixture():
    from inspector.sim import scenarios
    from inspector.sim.synthetic import build, picture
    from inspector.versions import get
    res = scenarios.run(scenarios.load("boot-2-nodes"), "v6.1")
    return res, build(picture(res, get("v6.1")))


def run_json(prog, name: str) -> str:
    from inspector.commands.base import Context, all_commands
    from inspector.drgn_plugin import session
    cmd = all_commands()[name]
    args = SimpleNamespace(**{o.dest: o.default for o in cmd.options}, force=False)
    args.as_json = True
    if cmd.prepare:
        cmd.prepare(args)
    out = io.StringIO()
    assert cmd.run(Context(cmd, args, session(prog), out, io.StringIO(), frontend="drgn")) == 0
    return out.getvalue()


@pytest.mark.parametrize("name", ["inspect", "clients"])
def test_documents_have_one_indentation_and_missing(fixture, name):
    _res, prog = fixture
    text = run_json(prog, name)
    doc = json.loads(text)
    assert text == json.dumps(doc, indent=1) + "\n"
    assert set(doc["missing"]) >= {"page_ext", "memmap", "stack_handles", "records_hidden"}


def test_clients_active_is_inspects_active(fixture):
    _res, prog = fixture
    inspect_doc = json.loads(run_json(prog, "inspect"))
    clients_doc = json.loads(run_json(prog, "clients"))
    ours = {c["name"]: c["active"] for c in clients_doc["clients"]}
    assert ours == {c["name"]: c["active"] for c in inspect_doc["page_ext"]["clients"]}
    # the recording's clients, and which of them its boot needed (the input's need())
    from inspector.sim import scenarios
    assert ours == {c["name"]: bool(c["need"]) for c in scenarios.load("boot-2-nodes")["input"]["clients"]}
    assert all((c["state"] == "active") == c["active"] for c in clients_doc["clients"])


def _calls(name: str):
    """Every call of ``name(...)`` or ``json.name(...)`` in the command layer."""
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and (isinstance(node.func, ast.Name) and node.func.id == name or
                                               isinstance(node.func, ast.Attribute) and node.func.attr == name):
                yield path, node


def test_every_document_goes_through_jsonout():
    """No command prints json.dumps() of its own: every document and JSON
    Lines line goes through inspector/jsonout.py (one indentation, the hex
    rule), but owner's records, which json_bytes() formats by column."""
    assert not [f"{p.name}:{c.lineno}" for p, c in _calls("dumps")
                if isinstance(c.func, ast.Attribute) and isinstance(c.func.value, ast.Name) and c.func.value.id == "json"]
    seen = sum(1 for _ in _calls("dumps")) + sum(1 for _ in _calls("dumps_line"))
    assert seen >= 14
    from inspector.jsonout import dumps
    assert dumps({"a": [1]}) == '{\n "a": [\n  1\n ]\n}'


def test_every_document_of_a_kernel_has_missing():
    """Every dict a command prints as its JSON document names ``missing``."""
    for path, call in _calls("dumps"):
        src = ast.get_source_segment(path.read_text(), call)
        if src.startswith("dumps(doc)"):
            continue  # watch's doc (built in _watch_outputs with "missing")
        assert '"missing"' in src or "missing_json" in src, f"{path.name}:{call.lineno}: {src[:80]}"
    watch = (ROOT / "inspector" / "commands" / "history.py").read_text()
    assert '"missing": missing_json(ctx)' in watch.split("def _watch_outputs", 1)[1].split("\ndef ", 1)[0]


def test_readme_documents_the_shapes():
    readme = (ROOT / "README.md").read_text()
    assert '"active": bool, "state"' in readme
    assert "\"sample_count\"" in readme and "indented by one space" in readme
    from inspector.jsonout import HEX_KEYS
    rule = readme.split("**64-bit quantities are hex strings.**", 1)[1].split("\n\n", 1)[0]
    assert all(f"`{k}`" in rule for k in HEX_KEYS)


# -- the JSON Schema files shipped in the package (inspector/schemas/) ---------------------------------

def validate(name: str, doc) -> None:
    """Check ``doc`` against the shipped schema of command ``name``."""
    import jsonschema
    schema = json.loads((ROOT / "inspector" / "schemas" / f"{name}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)


def _json_commands() -> list[str]:
    from inspector.commands.base import all_commands
    return sorted(n for n, c in all_commands().items() if any(o.dest == "as_json" for o in c.options))


def test_every_schema_is_shipped_and_valid():
    """One schema per command that prints JSON (every command with --json), no more."""
    import jsonschema
    names = sorted(p.stem for p in (ROOT / "inspector" / "schemas").glob("*.json"))
    assert names == _json_commands()
    assert len(names) == 14 and "validate" not in names
    for n in names:
        jsonschema.Draft202012Validator.check_schema(json.loads((ROOT / "inspector" / "schemas" / f"{n}.json")
                                                                .read_text()))
    assert '"inspector" = ["schemas/*.json"]' in (ROOT / "pyproject.toml").read_text()


def _properties(schema, path=""):
    """(path, key, sub-schema) of every named property in a schema."""
    if isinstance(schema, dict):
        for k, v in (schema.get("properties") or {}).items():
            yield f"{path}.{k}", k, v
            yield from _properties(v, f"{path}.{k}")
        for k, v in schema.items():
            if k != "properties":
                yield from _properties(v, path)
    elif isinstance(schema, list):
        for v in schema:
            yield from _properties(v, path)


def test_the_hex_rule_is_one_set_of_keys():
    """README's rule, held in one place (inspector.jsonout.HEX_KEYS): in every
    schema a property of that name holds "0x..." strings (or a container
    walked through), and a "0x..." property has one of those names."""
    from inspector.jsonout import HEX_KEYS
    pattern = "^0x[0-9a-f]+$"
    for n in _json_commands():
        schema = json.loads((ROOT / "inspector" / "schemas" / f"{n}.json").read_text())
        for path, key, sub in _properties(schema):
            hexed = sub.get("pattern") == pattern or (sub.get("items") or {}).get("pattern") == pattern
            types = sub.get("type") if isinstance(sub.get("type"), list) else [sub.get("type")]
            if key in HEX_KEYS and not hexed:
                assert "integer" not in types and (sub.get("items") or {}).get("type") != "integer", f"{n}{path}"
            assert not hexed or key in HEX_KEYS, f"{n}{path}"
    # owner's records, formatted column by column: the keys it writes as "0x..." are the set's
    src = (ROOT / "inspector" / "clients" / "page_owner.py").read_text().split("def json_bytes", 1)[1]
    src = src.split("\n    def ", 1)[0]
    import re
    written = set(re.findall(r'"(\w+)": \',\s*\*\(?hexnum', src))
    owner = json.loads((ROOT / "inspector" / "schemas" / "owner.json").read_text())["oneOf"][0]["properties"]
    assert written == {"gfp_mask", "handle", "free_handle"} == {k for k in owner if k in HEX_KEYS}


def test_inspect_prints_addresses_as_hex(fixture):
    """The tables' addresses and the sections' raw pointers are "0x..."
    strings holding the recording's values; counts, sizes and pfns stay
    integers."""
    res, prog = fixture
    doc = json.loads(run_json(prog, "inspect"))
    assert [t["address"] for t in doc["tables"]] == [f"{t.address:#x}" for t in res.layout.tables]
    assert [s["page_ext"] for s in doc["sections"]] == [f"{s.stored:#x}" for s in res.layout.sections]
    assert all(isinstance(t[k], int) for t in doc["tables"] for k in ("start_pfn", "nr_pages", "bytes", "node"))
    assert isinstance(doc["page_ext"]["total_bytes"], int) and doc["missing"]["stack_handles"] == []


@pytest.mark.parametrize("scenario", ["boot-2-nodes", "flatmem-unaligned", "hot-remove-reader"])
def test_simulate_output_validates_and_uses_the_common_keys(scenario):
    """simulate --json: ``section``/``page_ext`` where the recording (the
    library's format, unchanged) says ``nr``/``stored``, and ``missing``."""
    from conftest import inspect
    from inspector.sim import scenarios
    doc = json.loads(inspect("simulate", scenario, "--json").stdout)
    validate("simulate", doc)
    rec = scenarios.load(scenario)["expected"]["layout"]
    assert [(s["section"], int(s["page_ext"], 16)) for s in doc["layout"]["sections"]] == \
        [(s["nr"], s["stored"]) for s in rec["sections"]]
    assert [int(t["page_ext"], 16) for t in doc["layout"]["tables"]] == [t["stored"] for t in rec["tables"]]
    assert [int(t["address"], 16) for t in doc["layout"]["tables"]] == [t["address"] for t in rec["tables"]]
    assert not any("nr" in s or "stored" in s for s in doc["layout"]["sections"] + doc["layout"]["tables"])
    assert doc["missing"]["records_hidden"] == 0


def test_trace_events_validate():
    """trace --json prints the events its --record files hold (the same
    dicts), one a line: the recorded traces' events validate."""
    traces = sorted((ROOT / "fixtures" / "sim" / "traces").glob("*.jsonl"))
    assert traces
    for path in traces:
        lines = path.read_text().splitlines()
        for line in lines[1:]:
            validate("trace", json.loads(line))


def test_fleet_output_validates(tmp_path):
    from conftest import inspect
    root = ROOT / "fixtures" / "fleet"
    for question in ("top", "spread", "kernels"):
        validate("fleet", json.loads(inspect("fleet", question, str(root), "--json", "--limit", "3").stdout))


@pytest.mark.parametrize("name", ["inspect", "clients"])
def test_fixture_output_validates(fixture, name):
    import jsonschema
    doc = json.loads(run_json(fixture[1], name))
    validate(name, doc)
    doc["surprise"] = 1  # a key the schema does not know is refused: the schema is the whole document
    with pytest.raises(jsonschema.ValidationError):
        validate(name, doc)


def test_diff_and_plot_output_validate(tmp_path):
    from conftest import inspect
    from test_history_unit import LEAK, PIPE, WRITE, make, watch_dir
    a = make(tmp_path / "a.parquet", {LEAK: 10, PIPE: 3}, tasks={(7, "leaker", 7): 13, (8, "w", 7): 2})
    b = make(tmp_path / "b.parquet", {LEAK: 30, WRITE: 4}, sample=1, tasks={(7, "leaker", 7): 34})
    for by in ("stack", "pid", "tgid", "comm"):
        validate("diff", json.loads(inspect("diff", str(a), str(b), "--json", "--by", by).stdout))
    d = watch_dir(tmp_path)
    validate("plot", json.loads(inspect("plot", str(d), "-o", str(tmp_path / "p.png"), "--json").stdout))
