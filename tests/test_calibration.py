"""Calibration: the Platt map is monotone and lowers the ECE of a miscalibrated score; ``calibrate`` fits it on
judged lists, saves it in finerank.json (keeping the other keys), ``load_scorer`` hands it to the served score it was
fitted on; the CLI reports ECE before and after and refuses a damaged map with exit 2."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest

from finerank.core.errors import FinerankError, ModelError
from finerank.evaluation.calibrate import calibrate
from finerank.scorers.calibration import Calibration, ece, fit_platt, probability
from finerank.scorers.load import calibration_of, load_scorer

from conftest import run_cli
from test_rerank import FILLER, KEYWORDS, keyword_model  # noqa: F401 - the fixture


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_platt_recovers_a_miscalibrated_score():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, 4000)
    y = rng.random(4000) < _sigmoid(true_logit)
    raw = 4 * true_logit + 3  # overconfident and shifted
    a, b = fit_platt(raw, y)
    assert a > 0 and abs(a - 0.25) < 0.05 and abs(b + 0.75) < 0.2
    cal = Calibration(a, b, "cross-encoder", "logit")
    before, after = ece(probability(raw, None, "logit"), y), ece(cal.apply(raw), y)
    assert after < 0.03 < before
    p = cal.apply(raw)
    assert ((0 <= p) & (p <= 1)).all() and (np.argsort(p, kind="stable") == np.argsort(raw, kind="stable")).all()


def test_a_backwards_score_gets_the_base_rate_and_one_class_is_refused():
    y = np.array([1, 1, 0, 0, 0, 0], dtype=bool)
    a, b = fit_platt([-3, -2, 1, 2, 3, 4], y)
    assert a == 0 and 0.2 < _sigmoid(b) < 0.5
    with pytest.raises(FinerankError, match="relevant and non-relevant"):
        fit_platt([1, 2, 3], [True, True, True])


def test_uncalibrated_probability_is_in_0_1():
    assert probability([0.3, 0.9], None, "sigmoid").tolist() == [0.3, 0.9]
    p = probability([-50.0, 0.0, 50.0], None, "zsum")
    assert p[0] < 1e-9 and p[1] == 0.5 and p[2] > 1 - 1e-9


@pytest.mark.parametrize("bad,field", [({"a": "x", "b": 0, "scorer": "c", "scale": "logit"}, "calibration.a"),
                                       ({"a": -1, "b": 0, "scorer": "c", "scale": "logit"}, "calibration.a"),
                                       ({"a": 1, "b": 0, "scale": "logit"}, "calibration.scorer"),
                                       ({"a": 1, "b": 0, "scorer": "c", "scale": "x", "method": "iso"},
                                        "calibration.method")])
def test_a_damaged_map_names_the_field(bad, field):
    with pytest.raises(ModelError, match=field):
        Calibration.from_dict(bad, "m/finerank.json")


def keyword_lists(path, queries: int = 24, per_list: int = 10, seed: int = 1):
    """Judged lists: a document is relevant when it holds the query's keyword."""
    rng = random.Random(seed)
    rows = []
    for q in range(queries):
        k = KEYWORDS[q % len(KEYWORDS)]
        for d in range(per_list):
            words = [rng.choice(FILLER) for _ in range(rng.randint(8, 20))]
            rel = rng.random() < 0.3
            if rel:
                words.insert(rng.randint(0, len(words)), k)
            rows.append({"query_id": f"q{q}", "query": k, "doc_id": f"q{q}d{d}", "document": " ".join(words),
                         "label": int(rel)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_calibrate_saves_the_map_beside_the_other_parts(keyword_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(keyword_model, model)
    older = {"a": 1.0, "b": 0.0, "scorer": "cross-encoder", "scale": "logit"}  # a map fitted before: replaced
    (model / "finerank.json").write_text(json.dumps({"calibration": older}))
    data = keyword_lists(tmp_path / "val.jsonl")
    result = calibrate(model, data, out=tmp_path / "cal", folds=4)
    c = result.calibration
    assert c.queries == 24 and c.pairs == 240 and c.folds == 4 and c.scorer == "cross-encoder" and c.a > 0
    assert 0 <= c.ece_after and 0 <= c.ece_before  # measured on held-out folds
    saved = json.loads((model / "finerank.json").read_text())
    assert set(saved) == {"calibration"} and saved["calibration"]["a"] == pytest.approx(c.a)
    assert (tmp_path / "cal" / "calibration.png").stat().st_size > 1000
    assert json.loads((tmp_path / "cal" / "calibration.json").read_text())["reliability"]["after"]
    scorer = load_scorer(str(model))
    assert calibration_of(scorer) == Calibration.from_dict(saved["calibration"])
    assert calibration_of(load_scorer(str(keyword_model))) is None


def test_cli_calibrate_reports_ece_and_refuses_a_damaged_map(keyword_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(keyword_model, model)
    data = keyword_lists(tmp_path / "val.jsonl", queries=10)
    r = run_cli("calibrate", "--model", model, "--data", data, "--json", "--no-save")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["saved"] is None and got["calibration"]["ece_before"] >= 0 and not (model / "finerank.json").exists()
    r = run_cli("calibrate", "--model", model, "--data", data)
    assert r.returncode == 0 and "ECE" in r.stdout and "saved in" in r.stdout, r.stderr
    spec = json.loads((model / "finerank.json").read_text())
    spec["calibration"]["a"] = -2
    (model / "finerank.json").write_text(json.dumps(spec))
    r = run_cli("rerank", "--model", model, "--input", data, "--output", tmp_path / "out.jsonl")
    assert r.returncode == 2 and "calibration.a" in r.stderr and "Traceback" not in r.stderr


def test_train_calibrates_the_shipped_score_on_its_validation_lists(tiny_model, tmp_path):
    from finerank.training.train import train

    data = keyword_lists(tmp_path / "val.jsonl", queries=8)
    result = train(model=tiny_model, train=str(data), val=str(data), out=str(tmp_path / "run"), max_steps=2,
                   batch_size=8, max_length=32, eval_steps=100, loss="bce", fusion="off", query_check=0,
                   progress=False)
    cal = result.calibration
    assert cal and cal["scorer"] == "cross-encoder" and cal["queries"] == 8 and cal["ece_after"] is not None
    saved = json.loads((tmp_path / "run" / "best" / "finerank.json").read_text())["calibration"]
    assert saved == cal
    assert json.loads(open(result.record).read())["calibration"] == cal
    assert calibration_of(load_scorer(str(tmp_path / "run"))) == Calibration.from_dict(cal)


def test_a_map_fitted_on_another_score_is_not_applied(keyword_model, tmp_path, caplog):
    model = tmp_path / "model"
    shutil.copytree(keyword_model, model)
    other = Calibration(2.0, -1.0, "fused", "zsum").to_dict()  # fitted with a fusion the model no longer has
    (model / "finerank.json").write_text(json.dumps({"calibration": other}))
    with caplog.at_level("WARNING"):
        assert calibration_of(load_scorer(str(model))) is None
    assert "fused score" in caplog.text


def test_evaluate_reports_a_calibrated_models_ece(keyword_model, tmp_path):
    from finerank.evaluation.evaluate import evaluate

    model = tmp_path / "model"
    shutil.copytree(keyword_model, model)
    calibrate(model, keyword_lists(tmp_path / "val.jsonl"), folds=2)
    test = keyword_lists(tmp_path / "test.jsonl", queries=12, seed=7)  # other lists than it was fitted on
    report = evaluate(str(model), str(test), out=str(tmp_path / "eval"), query_check=0, card=False, log=lambda m: 0)
    cal = report.systems[0].calibration
    assert cal["pairs"] == 120 and 0 <= cal["ece_after"] <= 1 and 0 <= cal["ece_before"] <= 1
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["systems"][str(model)]["calibration"]["ece_after"] == cal["ece_after"]
    assert (tmp_path / "eval" / "calibration.png").exists()
    assert "Calibration of" in (tmp_path / "eval" / "report.html").read_text()
