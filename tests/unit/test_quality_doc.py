"""docs/quality.md and docs/calibration.json agree, and the recommendation follows from the saved pairs."""

import json
from pathlib import Path

from qastream.devtools import calibration

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_recommendation_is_recomputable_from_the_saved_scores():
    figures = json.loads((DOCS / "calibration.json").read_text())
    items = figures["items"]
    assert len(items) == figures["sample_size"]
    recomputed = calibration.recommend([i["llm_own"] for i in items], [i["llm_other"] for i in items],
                                       seed=figures["seed"])
    assert recomputed.as_dict() == figures["recommendation"]
    for name, dist in figures["distributions"].items():
        assert calibration.summarise([i[name] for i in items]).quantiles == dist["quantiles"]


def test_quality_doc_states_the_recommended_threshold_and_the_command():
    figures = json.loads((DOCS / "calibration.json").read_text())
    text = (DOCS / "quality.md").read_text()
    threshold = figures["recommendation"]["best"]["threshold"]
    assert f"**Recommendation: {threshold:.2f}.**" in text
    assert f"QASTREAM_SCORER_THRESHOLD={threshold:.2f}" in text
    assert "qastream calibrate --sample 150 --seed 7" in text and figures["command"].startswith("qastream calibrate")
    assert "bench/quality_run.py" in text
    run = json.loads((DOCS / "quality-run.json").read_text())
    assert run["threshold"] == threshold and run["total_responses"] >= 195
