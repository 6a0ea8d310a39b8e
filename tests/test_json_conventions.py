"""The JSON conventions of README's "JSON output" section (issue 20), on the
recorded fixture (the synthetic kernel of the ``boot-2-nodes`` scenario, as
tests/test_doctests.py uses it) through the same Context the drgn front end
gives a command, and over the source for what a fixture cannot show:

* one indentation (one space) in every command's JSON document; JSON Lines
  (``owner --json``) one record a line;
* ``missing`` in every command's document that reads a kernel;
* the same key for the same fact: ``clients``' ``active`` is ``inspect``'s
  ``page_ext.clients[].active``; a count of samples is ``sample_count``
  (``plot``), ``samples`` the list of them (``watch``).

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


def _dumps_calls():
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "dumps" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "json":
                yield path, node


def test_every_document_has_one_indentation():
    """Every json.dumps() of a command's output indents by one space, but the
    one line of a JSON Lines stream (owner --json's trailer)."""
    seen = 0
    for path, call in _dumps_calls():
        indent = next((k.value for k in call.keywords if k.arg == "indent"), None)
        seen += 1
        if indent is None:
            assert path.name == "page_owner.py", f"{path.name}:{call.lineno}: json.dumps without indent=1"
        else:
            assert isinstance(indent, ast.Constant) and indent.value == 1, f"{path.name}:{call.lineno}"
    assert seen >= 10


def test_every_document_of_a_kernel_has_missing():
    """Every dict a command prints as its JSON document names ``missing``
    (simulate reads no kernel: it runs the simulator)."""
    for path, call in _dumps_calls():
        src = ast.get_source_segment(path.read_text(), call)
        if path.name in ("sim.py", "report.py") or "indent" not in src:
            continue
        if "json_bytes" in src or src.startswith("json.dumps(doc"):
            continue  # owner's records; watch's doc (built in _watch_outputs with "missing")
        assert '"missing"' in src or "missing_json" in src, f"{path.name}:{call.lineno}: {src[:80]}"
    watch = (ROOT / "inspector" / "commands" / "history.py").read_text()
    assert '"missing": missing_json(ctx)' in watch.split("def _watch_outputs", 1)[1].split("\ndef ", 1)[0]


def test_readme_documents_the_shapes():
    readme = (ROOT / "README.md").read_text()
    assert '"active": bool, "state"' in readme
    assert "\"sample_count\"" in readme and "indented by one space" in readme


# -- the JSON Schema files shipped in the package (inspector/schemas/) ---------------------------------

def validate(name: str, doc) -> None:
    """Check ``doc`` against the shipped schema of command ``name``."""
    import jsonschema
    schema = json.loads((ROOT / "inspector" / "schemas" / f"{name}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)


def test_every_schema_is_shipped_and_valid():
    import jsonschema
    names = sorted(p.stem for p in (ROOT / "inspector" / "schemas").glob("*.json"))
    assert names == ["clients", "diff", "inspect", "plot", "top"]
    for n in names:
        jsonschema.Draft202012Validator.check_schema(json.loads((ROOT / "inspector" / "schemas" / f"{n}.json")
                                                                .read_text()))
    assert '"inspector" = ["schemas/*.json"]' in (ROOT / "pyproject.toml").read_text()


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
