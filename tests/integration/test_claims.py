"""The claims suite: its verdict rules on hand-made numbers, and one small suite end to end at smoke size."""

import json
import math

import pytest

from ldae.report import claims as C
from ldae.report.stats import (CONTRADICTED, HOLDS, INCONCLUSIVE, approx_verdict, diff, geq_verdict, mean_se,
                               shape_verdict, sign_verdict)


def test_mean_se_and_diff():
    m, se = mean_se([60.0, 62.0, 64.0])
    assert m == 62.0 and se == pytest.approx(2.0 / math.sqrt(3))
    assert mean_se([5.0]) == (5.0, None)
    d, sd = diff((60.0, 0.3), (61.0, 0.4))
    assert d == pytest.approx(1.0) and sd == pytest.approx(0.5)
    assert diff((60.0, None), (61.0, 0.4))[1] is None


@pytest.mark.parametrize("delta,se,expect,verdict", [
    (3.0, 1.0, "+", HOLDS), (1.5, 1.0, "+", INCONCLUSIVE), (-3.0, 1.0, "+", CONTRADICTED),
    (-3.0, 1.0, "-", HOLDS), (3.0, 1.0, "-", CONTRADICTED), (3.0, None, "+", INCONCLUSIVE)])
def test_sign_verdict(delta, se, expect, verdict):
    assert sign_verdict(delta, se, expect) == verdict


@pytest.mark.parametrize("delta,se,verdict", [
    (0.2, 0.3, HOLDS),          # 0.2 ± 0.6 inside ±1
    (0.5, 0.3, INCONCLUSIVE),   # 0.5 ± 0.6 reaches 1.1
    (-2.5, 0.5, CONTRADICTED),  # the whole interval beyond -1
    (0.0, None, INCONCLUSIVE)])
def test_approx_verdict(delta, se, verdict):
    assert approx_verdict(delta, se, 1.0) == verdict


@pytest.mark.parametrize("delta,se,verdict", [
    (3.0, 1.0, HOLDS), (-0.2, 0.3, HOLDS), (-0.8, 0.3, INCONCLUSIVE), (-3.0, 0.5, CONTRADICTED)])
def test_geq_verdict(delta, se, verdict):
    assert geq_verdict(delta, se, 1.0) == verdict


def test_shape_verdict():
    cap = [(50.0, 0.5), (58.0, 0.5), (60.0, 0.5), (55.0, 0.5)]
    assert shape_verdict(cap)[:2] == (HOLDS, 2)
    rising = [(50.0, 0.5), (55.0, 0.5), (60.0, 0.5), (65.0, 0.5)]  # the end beats every interior point
    assert shape_verdict(rising)[0] == CONTRADICTED
    flat = [(50.0, 2.0), (51.0, 2.0), (50.5, 2.0)]
    assert shape_verdict(flat)[0] == INCONCLUSIVE
    with pytest.raises(ValueError):
        shape_verdict([(1.0, 0.1), (2.0, 0.1)])


def test_judge_reads_runs_and_grid_points():
    results = {"11": {0: {"probe_top1": 60.0}, 1: {"probe_top1": 61.0}},
               "12": {0: {"probe_top1": 64.0, "grid": [{"t": 10, "offset": 0, "top1": 64.0},
                                                       {"t": 80, "offset": 0, "top1": 58.0}]},
                      1: {"probe_top1": 65.0, "grid": [{"t": 10, "offset": 0, "top1": 65.0},
                                                       {"t": 80, "offset": 0, "top1": 59.0}]}}}
    by_id = {c.id: c for c in C.CLAIMS}
    v = C.judge(by_id["9c"], results, 1.0)
    assert v.delta == pytest.approx(4.0) and v.se == pytest.approx(math.sqrt(0.25 + 0.25)) and v.verdict == HOLDS
    v = C.judge(by_id["13b"], results, 1.0)  # expect "-": t = 80 below t = 10
    assert v.delta == pytest.approx(-6.0) and v.verdict == HOLDS
    v = C.judge(by_id["14"], results, 1.0)
    assert v.verdict == INCONCLUSIVE and v.note.startswith("missing arms: half the epochs")


def test_a_contradiction_carries_what_is_known_of_it():
    by_id = {c.id: c for c in C.CLAIMS}
    results = {"12_single_level": {0: {"probe_top1": 75.0}, 1: {"probe_top1": 76.0}},
               "12": {0: {"probe_top1": 72.0}, 1: {"probe_top1": 73.0}}}
    v = C.judge(by_id["10"], results, 1.0)  # multi-level 3 points below single level: against the paper
    assert v.verdict == "contradicted" and v.note == by_id["10"].if_contradicted != ""
    results["12"] = {0: {"probe_top1": 79.0}, 1: {"probe_top1": 80.0}}  # the paper's sign: no note
    v = C.judge(by_id["10"], results, 1.0)
    assert v.verdict == HOLDS and v.note == ""


def test_every_claim_names_known_runs_and_compose():
    from ldae.config import validate
    from ldae.report.compose import compose_train

    for c in C.CLAIMS:
        assert c.kind in ("sign", "approx", "geq", "shape") and all(a.run in C.RUNS for a in c.arms), c.id
        assert (len(c.arms) == 2) != (c.kind == "shape") and (c.kind != "shape" or len(c.arms) >= 3), c.id
    for name, (experiment, overrides, _) in C.RUNS.items():
        validate(compose_train([f"experiment={experiment}", *overrides, "scale=cpu"]))
    assert {"1", "2a", "3", "5", "6", "7", "8", "9a", "9b", "9c", "10", "11", "12", "13a", "13b", "14"} <= \
        {c.id for c in C.CLAIMS} and set(C.LEFT_OUT) == {"4", "15"}


def test_unknown_claim_is_one_clear_error():
    from ldae.config import ConfigError

    with pytest.raises(ConfigError, match=r"unknown claim ids \['99'\]; allowed: 1, 2a"):
        C.claim_by_id(["99"])


@pytest.mark.slow
def test_claims_suite_at_smoke_end_to_end(tmp_path, monkeypatch):
    """Claims 9c and 13b (runs 11 and 12, the grid of 12) with 2 seeds: every file, every number in its place,
    and a second invocation reuses the finished runs (no training)."""
    from ldae.cli import compose_config

    cfg = compose_config(["scale=smoke", "claims=[9c,13b]", "seeds=2"], "claims")
    budget = ["trainer.max_epochs=1", "probe.epochs=1", "baselines=false"]
    doc = C.run_claims(cfg, tmp_path, ["scale=smoke"], budget, "test")  # the command line's keys reach every run
    assert json.loads((tmp_path / "11" / "seed0" / "results.json").read_text())["scale"] == "smoke"
    assert {p.name for p in tmp_path.iterdir()} >= {"claims.json", "claims.md", "claims.png", "11", "12"}
    assert (tmp_path / "12" / "seed1" / "grid.json").is_file() and not (tmp_path / "11" / "seed0" / "grid.json").exists()
    saved = json.loads((tmp_path / "claims.json").read_text())
    assert saved["meta"]["finished"] and [c["id"] for c in saved["claims"]] == ["9c", "13b"]
    v13 = saved["claims"][1]
    assert [a["label"] for a in v13["arms"]] == ["t=10", "t=80"] and all(len(a["values"]) == 2 for a in v13["arms"])
    top1 = {s: rec["probe_top1"] for s, rec in saved["runs"]["12"].items()}
    # the grid point (t=10, split) is the run's own probe: the same features and head recipe
    assert v13["arms"][0]["values"] == [top1["0"], top1["1"]]
    assert "| 9c |" in (tmp_path / "claims.md").read_text()

    import ldae.train

    monkeypatch.setattr(ldae.train, "run", lambda *a, **k: pytest.fail("a finished run was retrained"))
    again = C.run_claims(cfg, tmp_path, ["scale=smoke"], budget, "test")
    assert again["claims"] == doc["claims"]
