"""docs/quality.md's escalation table is what bench/quality_run.py renders from the two saved runs."""

import json

from bench_modules import ROOT, load_bench


def test_the_escalation_table_in_quality_md_is_rendered_from_the_saved_runs():
    assert "\n".join(load_bench("quality_run").escalation_table()) in (ROOT / "docs" / "quality.md").read_text()


def test_the_two_runs_differ_only_in_the_escalation_model():
    bench = load_bench("quality_run")
    off, on = (json.loads(path.read_text())["run"] for path in bench.ESCALATION_RUNS.values())
    assert (off["escalation_model"], on["escalation_model"]) == ("", "gemma3:270m")
    for key in ("questions", "seed", "threshold", "llm_backend", "llm_concurrency"):
        assert off[key] == on[key], key


def test_headline_counts_final_passes_whichever_attempt_wrote_them():
    report = {
        "total_responses": 10, "scored_responses": 10, "below_threshold": 2, "passed_first_attempt": 6,
        "low_quality": 2,
        "tokens": {"prompt_tokens": 900, "eval_tokens": 600, "wasted_tokens": 300, "tokens_per_kept_answer": 150.0,
                   "escalation": {"escalated": 3, "passed_after_escalation": 1}},
    }
    head = load_bench("quality_run").headline(report)
    assert (head["first_attempt_pass_rate"], head["final_pass_rate"], head["low_quality_share"]) == (0.6, 0.8, 0.2)
    assert (head["passed"], head["tokens"], head["wasted_tokens"]) == (8, 1500, 300)
    assert (head["escalated"], head["escalation_gain"]) == (3, 1)
