"""evaluate's report.html: self-contained (no network), per-query data that matches the runs, and it renders in
headless Chromium (Debian's ``chromium``; .ci/run installs it and sets FINERANK_REQUIRE_BROWSER=1)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from finerank.data.candidates import Candidates
from finerank.evaluation.evaluate import evaluate
from finerank.io.collection import load
from finerank.io.outputs import write_pairs
from finerank.retrieval.bm25 import candidates
from finerank.retrieval.mine import candidate_pairs


@pytest.fixture(scope="module")
def report(tiny_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("html")
    ds = load("cranfield")
    qids = sorted(ds.collection.queries, key=int)[:12]
    write_pairs(d / "c.jsonl", candidate_pairs(ds.collection, candidates(ds.collection, top_k=10, query_ids=qids)))
    rep = evaluate([f"tiny=cross:{tiny_model}"], str(d / "c.jsonl"), baselines=["bm25"], out=str(d / "ev"),
                   query_check=5, log=lambda m: None)
    return rep, d / "ev" / "report.html", Candidates.from_file(str(d / "c.jsonl"))


def _data(html: str) -> dict:
    raw = re.search(r"<script type='application/json' id='data'>(.*?)</script>", html, re.S).group(1)
    return json.loads(raw)


def test_report_html_is_self_contained_and_true_to_the_runs(report):
    rep, path, cands = report
    html = path.read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)""", html)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs), refs  # two plots, nothing fetched
    assert len(refs) == 2 and "<link" not in html and "@import" not in html and "http://" not in html
    assert "| tiny |" not in html and "<td data-v=''>tiny</td>" in html  # the summary table as HTML
    data = _data(html)
    assert data["systems"] == ["bm25", "tiny"] and data["baseline"] == "bm25"
    assert [q["id"] for q in data["queries"]] == sorted(cands.qrels, key=int)
    tiny = rep.system("tiny")
    for q in data["queries"]:
        assert q["text"] == cands.queries[q["id"]]
        assert q["m"][1] == pytest.approx(tiny.per_query["nDCG@10"][q["id"]], abs=1e-4)
        top = [d for d, _ in sorted(tiny.run[q["id"]].items(), key=lambda kv: (-kv[1], kv[0]))[:10]]
        assert [hit[0] for hit in q["top"][1]] == top
        assert [hit[1] for hit in q["top"][1]] == [cands.qrels[q["id"]].get(d) for d in top]
        assert all(data["docs"][d] for d in top)
    assert "</script" not in json.dumps(data)  # texts cannot close the data element early


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        if os.environ.get("FINERANK_REQUIRE_BROWSER"):
            pytest.fail("FINERANK_REQUIRE_BROWSER is set but no chromium is installed")
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    return found


def _browse(browser: str, tmp_path, url: str, *args: str) -> subprocess.CompletedProcess:
    """Chromium, headless and offline-minded, on ``url``; stderr carries the page's console messages."""
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", *args, url],
        capture_output=True, text=True, timeout=180)


def test_report_html_renders_in_headless_chromium(report, tmp_path):
    from matplotlib.image import imread

    browser = _chromium()
    _, path, cands = report
    first = sorted(cands.qrels, key=int)[0]
    url = f"{path.as_uri()}#q={first}"  # opens that query's side-by-side top 10
    dom = _browse(browser, tmp_path, url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    assert 'data-ready="1"' in dom.stdout and 'data-error="' not in dom.stdout
    assert len(re.findall(r'<tr class="q', dom.stdout)) == len(cands.qrels)  # rows the script rendered
    detail = dom.stdout.split('<tr class="detail">')[1].split("</tr>")[0]
    assert detail.count("<li>") == 20 and f"{len(cands.qrels)} queries; sorted by the change tiny − bm25" in dom.stdout

    shot = tmp_path / "report.png"
    r = _browse(browser, tmp_path, url, "--window-size=1300,1600", f"--screenshot={shot}")
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    pixels = imread(shot)
    assert pixels.shape[:2] == (1600, 1300) and pixels[:, :, :3].std() > 0.05  # a page, not a blank canvas
    if os.environ.get("FINERANK_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["FINERANK_KEEP_SCREENSHOT"])
