"""``opss schedule`` and ``opss demo`` through the real command line (subprocess).

Golden outputs live in tests/golden/sched/: ``*.json`` instances and
``expected.jsonl`` (every method on every instance, without ``seconds``).
Regenerate them after a deliberate change with ``python tests/test_sched_cli.py --regen``
and review the diff.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from opss.sched import METHODS, SchedGraph, makespan
from test_sched_oracles import brute_force_optimum, close

GOLDEN = Path(__file__).parent / "golden" / "sched"
INSTANCES = ["chain.json", "counterexample.json", "dag.json", "demo.json", "forest.json"]
NOT_TREES = {"dag.json"}


def opss(*args, cwd=None, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "opss", *args], capture_output=True, text=True, cwd=cwd, input=stdin, timeout=120
    )


def _golden_runs():
    for method in METHODS:
        files = [f for f in INSTANCES if not (method in ("tree", "pathwise") and f in NOT_TREES)]
        yield method, files


def _strip(line):
    out = json.loads(line)
    assert set(out) == {"instance", "method", "order", "makespan", "optimal", "lower_bound", "seconds"}
    assert out["seconds"] >= 0
    del out["seconds"]
    return out


def test_golden_outputs():
    expected = [json.loads(x) for x in (GOLDEN / "expected.jsonl").read_text().splitlines()]
    got = []
    for method, files in _golden_runs():
        proc = opss("schedule", "--method", method, *files, cwd=GOLDEN)
        assert proc.returncode == 0 and proc.stderr == ""
        lines = proc.stdout.splitlines()
        assert [json.loads(x)["instance"] for x in lines] == files  # input order
        got += [_strip(x) for x in lines]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert (g["instance"], g["method"], g["order"], g["optimal"]) == (
            e["instance"], e["method"], e["order"], e["optimal"]
        )
        assert math.isclose(g["makespan"], e["makespan"], rel_tol=1e-12)
        assert math.isclose(g["lower_bound"], e["lower_bound"], rel_tol=1e-12)


def test_golden_values_are_consistent_with_the_oracles():
    graphs = {f: SchedGraph.from_json(json.loads((GOLDEN / f).read_text())) for f in INSTANCES}
    optimum = {f: brute_force_optimum(gr) for f, gr in graphs.items()}
    for line in (GOLDEN / "expected.jsonl").read_text().splitlines():
        e = json.loads(line)
        gr = graphs[e["instance"]]
        assert e["makespan"] == makespan(gr, e["order"])
        assert e["lower_bound"] <= optimum[e["instance"]] + 1e-9
        if e["optimal"] or e["method"] == "exact":
            assert e["optimal"] and close(e["makespan"], optimum[e["instance"]])
    ce = [json.loads(x) for x in (GOLDEN / "expected.jsonl").read_text().splitlines()]
    ce = {e["method"]: e for e in ce if e["instance"] == "counterexample.json"}
    assert ce["tree"]["makespan"] == 30.0 and not ce["tree"]["optimal"]
    assert math.isclose(ce["exact"]["makespan"], 28.001)


def test_stdin_and_many_files(tmp_path):
    text = (GOLDEN / "counterexample.json").read_text()
    proc = opss("schedule", "-", stdin=text)
    assert proc.returncode == 0 and json.loads(proc.stdout)["instance"] == "-"
    files = []
    for k in range(300):
        gr = SchedGraph([(f"x{k}", 1 + k % 7, 0), ("y", 2, 1 + k % 5), ("z", 1, 3)], [(f"x{k}", "y"), (f"x{k}", "z")])
        p = tmp_path / f"i{k:03d}.json"
        p.write_text(json.dumps(gr.to_json()))
        files.append(str(p))
    proc = opss("schedule", "--method", "exact", *files)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [x["instance"] for x in lines] == files
    assert all(x["optimal"] and x["order"][0].startswith("x") for x in lines)


BAD = {
    "invalid_json.json": ('{"nodes": [', "invalid JSON"),
    "not_object.json": ("[1, 2]", "JSON object"),
    "cycle.json": (
        {"nodes": [{"id": "a", "f": 1, "g": 0}, {"id": "b", "f": 1, "g": 1}], "edges": [["a", "b"], ["b", "a"]]},
        "cycle",
    ),
    "unknown.json": ({"nodes": [{"id": "a", "f": 1, "g": 0}], "edges": [["a", "ghost"]]}, "unknown node 'ghost'"),
    "dup.json": ({"nodes": [{"id": "a", "f": 1, "g": 0}, {"id": "a", "f": 2, "g": 0}]}, "duplicate node id 'a'"),
    "negative.json": ({"nodes": [{"id": "a", "f": -1, "g": 0}]}, "non-negative"),
    "nan.json": ('{"nodes": [{"id": "a", "f": 1, "g": NaN}]}', "finite"),
    "inf.json": ('{"nodes": [{"id": "a", "f": Infinity, "g": 0}]}', "finite"),
    "string_time.json": ({"nodes": [{"id": "a", "f": "fast", "g": 0}]}, "number"),
    "binary.json": (b"\xff\xfe\x00garbage", "UTF-8"),
    "overflow.json": ({"nodes": [{"id": "a", "f": 1e308, "g": 1e308}, {"id": "b", "f": 1e308, "g": 0}],
                       "edges": [["a", "b"]]}, "overflows"),
}


def _write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))


def _assert_one_error_line(proc, name, word):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("opss schedule: error: ") and name in lines[0] and word in lines[0], lines[0]


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_one_line_and_nonzero(tmp_path, name):
    content, word = BAD[name]
    _write(tmp_path / name, content)
    proc = opss("schedule", name, cwd=tmp_path)
    _assert_one_error_line(proc, name, word)
    assert proc.stdout == ""


def test_missing_file_directory_tree_on_dag_and_budget(tmp_path):
    _assert_one_error_line(opss("schedule", "nope.json", cwd=tmp_path), "nope.json", "cannot read")
    (tmp_path / "d.json").mkdir()
    _assert_one_error_line(opss("schedule", "d.json", cwd=tmp_path), "d.json", "cannot read")
    proc = opss("schedule", "--method", "tree", "dag.json", cwd=GOLDEN)
    _assert_one_error_line(proc, "dag.json", "needs a tree: node")
    wide = SchedGraph([(f"v{k}", 1, 1 + k) for k in range(16)])
    (tmp_path / "wide.json").write_text(json.dumps(wide.to_json()))
    proc = opss("schedule", "--method", "exact", "--budget", "100", "wide.json", cwd=tmp_path)
    _assert_one_error_line(proc, "wide.json", "more than 100 states")
    proc = opss("schedule", "--method", "auto", "--budget", "100", "wide.json", cwd=tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["method"] == "auto"


def test_good_files_after_a_bad_one_still_run(tmp_path):
    _write(tmp_path / "bad.json", BAD["cycle.json"][0])
    good = str(GOLDEN / "chain.json")
    proc = opss("schedule", good, str(tmp_path / "bad.json"), good)
    assert proc.returncode == 2
    assert [json.loads(x)["instance"] for x in proc.stdout.splitlines()] == [good, good]
    assert len(proc.stderr.splitlines()) == 1 and "bad.json" in proc.stderr


def test_demo_prints_every_method():
    proc = opss("schedule", "--demo")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.split()[:1] and line.split()[0] in METHODS}
    assert set(rows) == set(METHODS)
    assert rows["exact"][2] == "0.00" and rows["exact"][3] == "yes"
    proc = opss("schedule", "--demo", "--json")
    gr = SchedGraph.from_json(json.loads(proc.stdout))
    order = rows["exact"][5:]
    assert math.isclose(makespan(gr, order) * 1e3, float(rows["exact"][1]), abs_tol=0.006)
    assert math.isclose(brute_force_optimum(gr) * 1e3, float(rows["exact"][1]), abs_tol=0.006)


def _regenerate():
    lines = []
    for method, files in _golden_runs():
        proc = opss("schedule", "--method", method, *files, cwd=GOLDEN)
        assert proc.returncode == 0, proc.stderr
        lines += [json.dumps(_strip(x)) for x in proc.stdout.splitlines()]
    (GOLDEN / "expected.jsonl").write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} lines to {GOLDEN / 'expected.jsonl'}")


if __name__ == "__main__" and sys.argv[1:] == ["--regen"]:
    _regenerate()
