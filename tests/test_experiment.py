"""The bandwidth experiment: summary arithmetic (any user) and the real shaped run (root)."""

import csv
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opss.lab.experiment import RUN_FIELDS, summarize
from opss.lab.testbed import leftovers


def _write_runs(path: Path, latencies: dict, shared: dict | None = None) -> None:
    shared = shared or {}
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=RUN_FIELDS, extrasaction="ignore")
        w.writeheader()
        for k, ((strategy, pred), lats) in enumerate(latencies.items()):
            for i, lat in enumerate(lats, 1):
                w.writerow({"model": "m", "link": "4g", "nominal_mbps": 5.85, "strategy": strategy, "run": i,
                            "latency_s": lat, "predicted_s": pred, "server_s": 0.01, "where": "cooperative",
                            "verified": True, "cut_bytes": 10, "client_vertices": k + 1, "cut": "x",
                            "shared_with": shared.get(strategy, "")})


#: columns of a summary.md latency row split on "|" (the first cell is empty)
MEDIAN, VS_PO, VS_BEST = 8, 12, 13


def _cells(text: str, strategy: str) -> list[str]:
    row = next(line for line in text.splitlines() if line.startswith("| 4g | m | " + strategy))
    return [c.strip() for c in row.split("|")]


def test_summary_medians_and_speedups_match_a_recomputation(tmp_path):
    lat = {("lo", 0.5): [0.50, 0.52, 0.49], ("co", 0.9): [0.9, 1.1, 1.0],
           ("po", 0.4): [0.41, 0.39, 0.40, 0.45], ("opss", 0.3): [0.31, 0.29, 0.30]}
    _write_runs(tmp_path / "runs.csv", lat)
    text = summarize(tmp_path)
    po = statistics.median([0.41, 0.39, 0.40, 0.45])
    opss = statistics.median([0.31, 0.29, 0.30])
    best = min(statistics.median([0.50, 0.52, 0.49]), statistics.median([0.9, 1.1, 1.0]))
    cells = _cells(text, "opss |")
    assert cells[MEDIAN] == f"{opss * 1e3:.1f}"
    assert cells[VS_PO].startswith(f"{po / opss:.2f}x [")
    assert cells[VS_BEST].startswith(f"{best / opss:.2f}x [")
    assert (tmp_path / "summary.md").exists() and (tmp_path / "experiment_latency.png").stat().st_size > 0


def test_summary_ratios_carry_bootstrap_intervals_and_shared_plans_read_equal(tmp_path):
    import random

    from opss.stats import bootstrap_groups_ci, ratio_ci

    rng = random.Random(1)
    drift = [1 + 0.3 * rng.random() for _ in range(12)]  # a slow machine drift, the same for every arm
    lo = [0.50 * d for d in drift]
    co = [0.52 * d * (1 + 0.3 * rng.random()) for d in drift]
    po = [0.40 * d * (1 + 0.2 * rng.random()) for d in drift]
    opss = [0.40 * d * (1 + 0.2 * rng.random()) for d in drift]  # the same distribution as po: n.s.
    joint = [0.25 * d for d in drift]  # clearly faster
    lat = {("lo", 0.5): lo, ("co", 0.5): co, ("po", 0.4): po, ("opss", 0.4): opss, ("joint", 0.3): joint}
    _write_runs(tmp_path / "runs.csv", lat)
    text = summarize(tmp_path)
    r, a, b = ratio_ci(po, opss)
    assert a <= 1.0 <= b
    assert _cells(text, "opss")[VS_PO] == f"{r:.2f}x [{a:.2f}, {b:.2f}] n.s."
    r, a, b = ratio_ci(po, joint)
    assert a > 1.0 and _cells(text, "joint")[VS_PO] == f"{r:.2f}x [{a:.2f}, {b:.2f}]"
    best = bootstrap_groups_ci([lo, co, joint], lambda x, y, z: min(statistics.median(x), statistics.median(y))
                               / statistics.median(z))
    assert _cells(text, "joint")[VS_BEST] == (f"{statistics.median(lo) / statistics.median(joint):.2f}x "
                                         f"[{best[0]:.2f}, {best[1]:.2f}]")
    assert _cells(text, "po")[VS_PO] == "ref" and _cells(text, "lo")[VS_BEST] == "ref"
    # measured once and shared: opss ran po's plan, po ran lo's
    lat[("opss", 0.4)] = po
    _write_runs(tmp_path / "runs.csv", lat, shared={"opss": "po"})
    text = summarize(tmp_path)
    assert _cells(text, "opss (= po plan)")[VS_PO] == "= po"
    lat[("po", 0.4)] = lat[("opss", 0.4)] = lo
    _write_runs(tmp_path / "runs.csv", lat, shared={"po": "lo", "opss": "lo"})
    text = summarize(tmp_path)
    assert _cells(text, "po (= lo plan)")[VS_BEST] == "= lo" and _cells(text, "opss (= po plan)")[VS_PO] == "= po"
    assert _cells(text, "lo (= po plan)")[VS_PO] == "= po"


def test_raw_arms_are_the_reference_and_the_photos_jpeg_a_baseline(tmp_path):
    """With the paper's raw arms beside the codec ones, 'vs po' is against po@raw (the paper's
    partition-only) and 'vs best lo/co' takes the best of lo, co@raw and co (the photo's JPEG)."""
    import random

    from opss.stats import best_ratio_ci, ratio_ci

    rng = random.Random(2)
    drift = [1 + 0.2 * rng.random() for _ in range(10)]
    runs = {"lo": 0.50, "co@raw": 0.90, "co": 0.30, "po@raw": 0.45, "po": 0.44, "joint@raw": 0.42, "joint": 0.20}
    lat = {(arm, base): [base * d * (1 + 0.05 * rng.random()) for d in drift] for arm, base in runs.items()}
    _write_runs(tmp_path / "runs.csv", lat)
    text = summarize(tmp_path)
    header = next(line for line in text.splitlines() if line.startswith("| link | model | arm |"))
    assert [c.strip() for c in header.split("|")][VS_PO] == "vs po@raw [95 % CI]"
    arms = [line.split("|")[3].strip() for line in text.split("## Latency", 1)[1].splitlines()
            if line.startswith("| 4g | m |")]
    assert arms == ["lo", "co@raw", "co", "po@raw", "po", "joint@raw", "joint"]
    series = {arm: v for (arm, _), v in lat.items()}
    r, a, b = ratio_ci(series["po@raw"], series["joint"])
    assert _cells(text, "joint |")[VS_PO] == f"{r:.2f}x [{a:.2f}, {b:.2f}]" and _cells(text, "po@raw")[VS_PO] == "ref"
    r, a, b = best_ratio_ci([series["lo"], series["co"], series["co@raw"]], series["joint"])
    assert _cells(text, "joint |")[VS_BEST] == f"{r:.2f}x [{a:.2f}, {b:.2f}]"
    assert _cells(text, "co |")[VS_BEST] == "ref"  # the JPEG is the best baseline here
    # the per-point headline: every arm's median, the fastest bold, joint's two ratios as in the full table
    head = next(line for line in text.splitlines() if line.startswith("| 4g | m | ") and "**" in line)
    cells = [c.strip() for c in head.split("|")][3:-1]
    assert cells[:7] == [f"{statistics.median(series[a]) * 1e3:.0f}" if a != "joint"
                         else f"**{statistics.median(series[a]) * 1e3:.0f}**" for a in arms]
    assert cells[7:] == [_cells(text, "joint |")[VS_PO], _cells(text, "joint |")[VS_BEST]]


def test_worker_sends_the_photo_runs_every_arm_and_records_the_wire():
    """The client worker on its own (no root: an in-process server on loopback): every arm of
    compared_arms planned and run with its output verified, what crosses the wire recorded, the
    paper's raw arms sending raw float32."""
    from opss.lab.harness import compared_arms, input_shape, start_server
    from opss.plan import STRATEGIES

    server = start_server("resnet18", small=True)
    try:
        args = {"model": "resnet18", "server": f"127.0.0.1:{server.port}", "strategies": list(STRATEGIES),
                "codecs": "lossless", "image": "grace_hopper.jpg", "runs": 2, "small": True, "timeout_s": 60}
        proc = subprocess.run([sys.executable, "-m", "opss.lab.experiment", "worker", json.dumps(args)],
                              input="go\n", capture_output=True, text=True, timeout=600)
    finally:
        server.stop(0).wait(5)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = [json.loads(line) for line in proc.stdout.splitlines()]
    meta, runs = recs[0], recs[1:]
    arms = compared_arms(STRATEGIES, "lossless")
    assert meta["kind"] == "meta" and set(meta["plans"]) == set(arms)
    wire = meta["wire"]
    assert wire["image"] == "grace_hopper.jpg" and wire["image_bytes"] > 0 and wire["codec_table"]["costs"]
    assert "file" in wire["codecs"] and wire["image_decode_s"] > 0
    assert sorted(r["strategy"] for r in runs) == sorted(list(arms) * 2)
    assert all(r["verified"] for r in runs), [r for r in runs if not r["verified"]]
    plans = meta["plans"]
    assert all(v == "raw" for a in ("co@raw", "po@raw", "joint@raw") for v in plans[a]["codecs"].values())
    raw_input = 4 * math.prod(input_shape("resnet18", small=True))
    assert plans["co@raw"]["wire_bytes"] == plans["co@raw"]["cut_bytes"] == raw_input
    # on loopback (gigabytes per second) a codec seldom pays; more choices never predict worse
    assert plans["co"]["wire_bytes"] <= plans["co@raw"]["wire_bytes"]
    assert all(plans[a]["predicted"]["total"] <= plans[f"{a}@raw"]["predicted"]["total"] * (1 + 1e-9)
               for a in ("co", "po", "joint"))
    for r in runs:  # a shared arm's runs are its group's first arm's
        if r["shared_with"]:
            assert plans[r["strategy"]]["shared_with"] == r["shared_with"]


def test_a_point_is_done_only_when_every_compared_arm_has_its_runs(tmp_path):
    """Resuming: a point whose raw arms are missing (e.g. from a run before they existed) is not done,
    and a folder's runs are never mixed with runs made with other codecs or another photo."""
    from opss.errors import OpssError
    from opss.lab.experiment import ExperimentConfig, _check_settings, _done
    from opss.lab.harness import compared_arms
    from opss.profile import cpu_description
    from opss.plan import STRATEGIES

    arms = compared_arms(STRATEGIES, "lossless")
    rows = [{"model": "m", "link": "4g", "strategy": s} for s in STRATEGIES for _ in range(3)]
    assert _done(rows, "m", "4g", STRATEGIES, 3) and not _done(rows, "m", "4g", arms, 3)
    rows += [{"model": "m", "link": "4g", "strategy": s} for s in arms if s.endswith("@raw") for _ in range(3)]
    assert _done(rows, "m", "4g", arms, 3) and not _done(rows, "m", "3g", arms, 3)
    _check_settings(tmp_path, ExperimentConfig(out=tmp_path))
    _check_settings(tmp_path, ExperimentConfig(out=tmp_path))  # the same settings: resumes
    for other in (ExperimentConfig(out=tmp_path, codecs="raw"), ExperimentConfig(out=tmp_path, image="coffee.png"),
                  ExperimentConfig(out=tmp_path, client_cpu_share=0.1)):
        with pytest.raises(OpssError, match="holds runs made with (codecs 'lossless'|image 'grace_hopper.jpg'|"
                                            "client_cpu 0.25)"):
            _check_settings(tmp_path, other)
    # runs made on another CPU are not mixed in either (the client and server speeds are that CPU's)
    recorded = json.loads((tmp_path / "experiment.json").read_text())
    assert recorded["client_cpu"] == 0.25 and recorded["cpu"] == cpu_description()
    (tmp_path / "experiment.json").write_text(json.dumps({**recorded, "cpu": "Some Other CPU"}))
    with pytest.raises(OpssError, match="cpu 'Some Other CPU'"):
        _check_settings(tmp_path, ExperimentConfig(out=tmp_path))


def test_cli_refuses_without_root_in_one_line(tmp_path):
    code = ("import os, sys; os.geteuid = lambda: 1000; from opss.cli import main; "
            f"sys.exit(main(['experiment', '--out', {str(tmp_path)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs root" in lines[0] and "opss demo" in lines[0], proc.stderr


def _experiment(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "opss", "experiment", "--small", "--models", "resnet18", "--links", "4g",
           "--out", str(out), "--subnet", "10.77.5.0/30", "--port", "50071", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.root
def test_smoke_shaped_link_verified_and_cleaned_up(tmp_path):
    proc = _experiment(tmp_path, "--runs", "3")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    links = list(csv.DictReader((tmp_path / "links.csv").open()))
    nominal, measured = float(links[0]["nominal_mbps"]), float(links[0]["measured_mbps"])
    assert abs(measured - nominal) / nominal < 0.15, links
    rows = list(csv.DictReader((tmp_path / "runs.csv").open()))
    arms = ("lo", "co@raw", "co", "po@raw", "po", "opss", "joint@raw", "joint")
    assert {r["strategy"] for r in rows} == set(arms)
    assert all(sum(r["strategy"] == s for r in rows) == 3 for s in arms)
    assert all(r["verified"] == "True" for r in rows), [r for r in rows if r["verified"] != "True"]
    assert all(r["where"] in ("cooperative", "local") for r in rows)
    assert any(r["where"] == "cooperative" for r in rows)
    assert not [x for x in leftovers() if str(proc.pid) in x]
    # resumable: a second call finds every point done and only summarizes
    again = _experiment(tmp_path, "--runs", "3")
    text, _ = again.communicate(timeout=120)
    assert again.returncode == 0 and "already in" in text, text


def _server_pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.root
def test_server_killed_mid_experiment_leaves_nothing_behind(tmp_path):
    proc = _experiment(tmp_path, "--runs", "30")
    ns = None
    deadline = time.monotonic() + 300
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "server namespace" in line:
            ns = line.split("server namespace")[1].split()[0]
        if "link 4g:" in line:  # the server is up and the first point starts
            break
        assert time.monotonic() < deadline, "".join(lines)
    assert ns is not None, "".join(lines)
    time.sleep(3)
    for pid in _server_pids(ns):
        os.kill(pid, signal.SIGKILL)
    rest, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0, "".join(lines) + rest
    assert "Traceback" not in rest and "opss-server exited" in rest, rest
    assert not [x for x in leftovers() if str(proc.pid) in x], leftovers()


@pytest.mark.root
def test_sigkilled_namespace_run_is_cleaned_up_by_cleanup(tmp_path):
    """A SIGKILLed driver cannot clean up; its state files let --cleanup remove namespace, veth and cgroup."""
    state = tmp_path / "state"
    proc = _experiment(tmp_path / "out", "--runs", "50", "--state-dir", str(state), "--subnet", "10.77.6.0/30",
                       "--port", "50072")
    deadline = time.monotonic() + 300
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "link 4g:" in line:
            break
        assert time.monotonic() < deadline, "".join(lines)
    mine = [x for x in leftovers() if str(proc.pid) in x]
    assert any(x.startswith("netns") for x in mine) and any(x.startswith("cgroup") for x in mine), mine
    assert len(list(state.glob("*.json"))) == 2  # the testbed's and the cgroup's
    proc.kill()
    proc.wait()
    assert [x for x in leftovers() if str(proc.pid) in x] == mine  # nothing restored itself
    done = subprocess.run([sys.executable, "-m", "opss", "experiment", "--cleanup", "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "namespace" in done.stdout and "cgroup" in done.stdout, done
    assert not [x for x in leftovers() if str(proc.pid) in x], leftovers()
    assert not list(state.glob("*.json"))


def test_a_runs_file_with_an_older_header_is_rewritten_before_a_row_is_appended(tmp_path):
    """Resuming into a runs.csv written before a column existed: the file is rewritten under the new
    header first, so the new row's values land under their own names and the old rows keep theirs."""
    from opss.lab.experiment import _append, _read_rows

    path = tmp_path / "runs.csv"
    path.write_text("model,link,latency_s\nm,4g,0.5\n")
    _append(path, ("model", "link", "latency_s", "decode_s"), {"model": "m", "link": "wifi", "latency_s": 0.25,
                                                               "decode_s": 0.004})
    rows = _read_rows(path)
    assert [(r["link"], r["latency_s"], r["decode_s"]) for r in rows] == [("4g", "0.5", ""), ("wifi", "0.25", "0.004")]
    assert all(None not in r for r in rows)  # no value without a column


def test_summary_sets_the_servers_reported_decode_beside_the_predicted_one(tmp_path):
    """The codec-terms table: per arm that decodes anything, the median of the server's reported
    decode seconds beside the predicted ones (the file form's decode is a term of the winning plan)."""
    decode = [0.011, 0.013, 0.012, 0.030]
    with (tmp_path / "runs.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=RUN_FIELDS, extrasaction="ignore")
        w.writeheader()
        for i, d in enumerate(decode, 1):
            for arm, dec, codecs in (("co", d, "x=file"), ("co@raw", 0.0, "")):
                w.writerow({"model": "m", "link": "wifi", "nominal_mbps": 18.88, "strategy": arm, "run": i,
                            "latency_s": 0.08, "predicted_s": 0.06, "server_s": 0.04, "after_upload_s": 0.05,
                            "where": "cooperative", "verified": True, "cut_bytes": 602112, "client_vertices": 1,
                            "cut": "x", "codecs": codecs, "encode_s": 0.0, "pred_encode_s": 0.0,
                            "decode_s": dec, "pred_decode_s": 0.0033 if dec else 0.0})
    text = summarize(tmp_path)
    section = text.split("## Codec terms", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| wifi | m |")]
    assert rows == [f"| wifi | m | co | file | 0.0 (0.0) | {statistics.median(decode) * 1e3:.1f} (3.3) |"]
