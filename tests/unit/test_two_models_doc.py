"""docs/quality.md's "Two models" table is what bench/two_models.py renders from the saved figures."""

import json

from bench_modules import ROOT, load_bench


def test_the_table_in_quality_md_is_rendered_from_the_saved_figures():
    assert "\n".join(load_bench("two_models").table()) in (ROOT / "docs" / "quality.md").read_text()


def test_both_calibrations_used_the_same_sample_and_scorer():
    smol, gemma = (json.loads((ROOT / "docs" / f"calibration-{m}.json").read_text()) for m in ("smollm2", "gemma3"))
    assert (smol["llm"]["model"], gemma["llm"]["model"]) == ("smollm2", "gemma3:270m")
    for key in ("datasets", "seed", "sample_requested", "scorer"):
        assert smol[key] == gemma[key], key
    assert smol["current_threshold"]["threshold"] == gemma["current_threshold"]["threshold"]
    # the same questions, apart from the one Gemma left unanswered
    assert {i["question"] for i in gemma["items"]} <= {i["question"] for i in smol["items"]}


def test_paired_comparison_counts_each_question_once():
    bench = load_bench("two_models")
    a = {"items": [{"question": "q1", "llm_own": 0.5}, {"question": "q2", "llm_own": 0.2},
                   {"question": "q3", "llm_own": 0.4}, {"question": "q3", "llm_own": 0.4}]}
    b = {"items": [{"question": "q1", "llm_own": 0.3}, {"question": "q2", "llm_own": 0.4},
                   {"question": "q3", "llm_own": 0.5}]}
    result = bench.paired(a, b, threshold=0.33)
    assert (result["questions"], result["pass_only_a"], result["pass_only_b"]) == (3, 1, 1)
    assert (result["b_higher"], result["b_lower"], result["mcnemar_p"]) == (2, 1, 1.0)
    assert result["mean_difference"] == round((-0.2 + 0.2 + 0.1) / 3, 3)
