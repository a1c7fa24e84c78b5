"""docs/quality.md "Two models": SmolLM2-135M and Gemma 3 270M on the calibration sample, same scorer.

Starts one embedded ``qastream llm-server --backend smollm2,gemma3`` (one
slot per model, 2 threads) on a free port and then, against it:

1. ``qastream calibrate --sample 150 --seed 7 --model M`` for each model, one
   after the other: answers, BERTScore distributions, pass rate at the
   configured threshold, saved to ``docs/calibration-smollm2.json`` and
   ``docs/calibration-gemma3.json``;
2. the seconds per answer, measured *interleaved*: the same questions go to
   both models in turn (ABBA order), one call at a time, so load from other
   processes on a shared machine falls on both alike.  Calibration's own
   generation time is not comparable between two runs made minutes apart.

Prints the comparison table of docs/quality.md and saves the timing to
``docs/two-models-timing.json``.

    .venv/bin/python bench/two_models.py                    # everything: about 50 min on 2 cores shared with other jobs
    .venv/bin/python bench/two_models.py --timing-only      # step 2 only
    .venv/bin/python bench/two_models.py --table-only       # the table, from the saved files
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
from math import comb
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qastream.devtools.embedded import free_port, log_file, start_llm_server, stop  # noqa: E402

DOCS = ROOT / "docs"
MODELS = {"smollm2": "SmolLM2-135M-Instruct", "gemma3:270m": "Gemma 3 270M"}
TIMING = DOCS / "two-models-timing.json"
SAMPLE, SEED = 150, 7


def calibration_file(model: str) -> Path:
    return DOCS / f"calibration-{model.split(':')[0]}.json"


def calibrate(url: str, model: str) -> None:
    subprocess.run([sys.executable, "-m", "qastream", "calibrate", "--sample", str(SAMPLE), "--seed", str(SEED),
                    "--ollama-url", url, "--model", model, "--output", str(calibration_file(model))],
                   cwd=ROOT, check=True)


async def interleaved_timing(url: str, questions: int) -> dict[str, Any]:
    """Seconds and tokens per answer of each model, the models taking turns on each question."""
    from qastream.app import settings
    from qastream.datasets import BadRows, open_datasets
    from qastream.datasets.records import sample
    from qastream.services.llm import LLMClient

    records = sample(open_datasets(["foldoc", "jargon"], BadRows()), SAMPLE, SEED)[:questions]
    clients = {m: LLMClient(url, m, timeout=300.0, concurrency=1, max_tokens=settings.llm_max_tokens,
                            temperature=settings.llm_temperature) for m in MODELS}
    seconds: dict[str, list[float]] = {m: [] for m in MODELS}
    tokens: dict[str, list[int]] = {m: [] for m in MODELS}
    for client in clients.values():
        await client.start()
    try:
        for i, record in enumerate(records):
            for model in (list(MODELS) if i % 2 == 0 else list(reversed(MODELS))):
                started = time.perf_counter()
                generation = await clients[model].generate(record.question)
                seconds[model].append(time.perf_counter() - started)
                tokens[model].append(generation.tokens)
            print(f"\rtiming: {i + 1}/{len(records)} questions", end="", file=sys.stderr, flush=True)
    finally:
        print(file=sys.stderr)
        for client in clients.values():
            await client.stop()
    return {"questions": len(records), "order": "ABBA, one call at a time", "models": {
        m: {"mean_seconds": round(statistics.mean(seconds[m]), 2), "median_seconds": round(statistics.median(seconds[m]), 2),
            "mean_tokens": round(statistics.mean(tokens[m]), 1),
            "tokens_per_second": round(sum(tokens[m]) / sum(seconds[m]), 1)} for m in MODELS}}


def paired(a: dict[str, Any], b: dict[str, Any], threshold: float, seed: int = SEED) -> dict[str, Any]:
    """``b`` against ``a`` on the questions both answered: score differences and pass/fail changes.

    A question drawn twice (a headword in both dictionaries) counts once.
    McNemar's exact test: under "neither model passes more often", the
    questions only one model passes split like fair coin flips.
    """
    sa = {i["question"]: i["llm_own"] for i in a["items"]}
    sb = {i["question"]: i["llm_own"] for i in b["items"]}
    common = sorted(set(sa) & set(sb))
    diffs = [sb[q] - sa[q] for q in common]
    only_a = sum(1 for q in common if sa[q] >= threshold > sb[q])
    only_b = sum(1 for q in common if sb[q] >= threshold > sa[q])
    rng = random.Random(seed)
    means = sorted(statistics.mean(rng.choice(diffs) for _ in diffs) for _ in range(2000))
    n, k = only_a + only_b, min(only_a, only_b)
    p = min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    return {"questions": len(common), "mean_difference": round(statistics.mean(diffs), 3),
            "bootstrap_95": [round(means[49], 3), round(means[1949], 3)],
            "b_higher": sum(d > 0 for d in diffs), "b_lower": sum(d < 0 for d in diffs),
            "pass_only_a": only_a, "pass_only_b": only_b, "mcnemar_p": round(p, 4)}


def table() -> list[str]:
    """The comparison table of docs/quality.md, from the saved calibration and timing files."""
    figures = {m: json.loads(calibration_file(m).read_text()) for m in MODELS}
    timing = json.loads(TIMING.read_text())
    threshold = figures["smollm2"]["current_threshold"]["threshold"]

    def row(label: str, cell) -> str:
        return f"| {label} | " + " | ".join(cell(m, figures[m]) for m in MODELS) + " |"

    def own(f: dict[str, Any]) -> dict[str, Any]:
        return f["distributions"]["llm_own"]

    def words(f: dict[str, Any]) -> float:
        return statistics.median(len(i["answer"].split()) for i in f["items"])

    def passed(f: dict[str, Any]) -> int:
        return sum(1 for i in f["items"] if i["llm_own"] >= threshold)

    lines = [
        "| | " + " | ".join(f"{MODELS[m]} (`{m}`)" for m in MODELS) + " |",
        "|---|" + "---|" * len(MODELS),
        row("answers (of 150 questions)", lambda m, f: f"{f['sample_size']}"
            + (f" ({f['failed_generations']} empty)" if f["failed_generations"] else "")),
        row(f"**pass rate at {threshold:.2f}** (of the answers)",
            lambda m, f: f"**{own(f)['share_at_or_above_current']:.1%}** ({passed(f)})"),
        row(f"answers to another question passing {threshold:.2f}",
            lambda m, f: f"{f['distributions']['llm_other']['share_at_or_above_current']:.1%}"),
        row("score quartiles p25 / median / p75",
            lambda m, f: " / ".join(f"{own(f)['quantiles'][q]:.3f}" for q in ("p25", "p50", "p75"))),
        row("score mean; p5 - p95", lambda m, f: f"{own(f)['mean']:.3f}; {own(f)['quantiles']['p5']:.3f} - "
                                                 f"{own(f)['quantiles']['p95']:.3f}"),
        row("AUC own vs other question", lambda m, f: f"{f['recommendation']['auc']:.3f}"),
        row("words per answer (median)", lambda m, f: f"{words(f):g}"),
        row(f"**seconds per answer**, interleaved ({timing['questions']} questions)",
            lambda m, f: f"**{timing['models'][m]['mean_seconds']:.2f}** (median "
                         f"{timing['models'][m]['median_seconds']:.2f})"),
        row("tokens per answer; tokens per second", lambda m, f: f"{timing['models'][m]['mean_tokens']:g}; "
                                                                 f"{timing['models'][m]['tokens_per_second']:g}"),
        row("seconds per answer in its calibration run", lambda m, f: f"{f['generation_seconds'] / SAMPLE:.2f}"),
    ]
    p = paired(figures["smollm2"], figures["gemma3:270m"], threshold)
    lines += ["", f"Paired, on the {p['questions']} questions both answered: Gemma's score minus SmolLM2's is "
                  f"{p['mean_difference']:+.3f} on average (bootstrap 95 % interval {p['bootstrap_95'][0]:+.3f} to "
                  f"{p['bootstrap_95'][1]:+.3f}); Gemma scores higher on {p['b_higher']}, lower on {p['b_lower']}. "
                  f"{p['pass_only_a']} pass with SmolLM2 only, {p['pass_only_b']} with Gemma only "
                  f"(McNemar exact p = {p['mcnemar_p']:.3f})."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timing-only", action="store_true", help="skip the two calibrations")
    parser.add_argument("--table-only", action="store_true", help="print the table from the saved files")
    parser.add_argument("--questions", type=int, default=SAMPLE, help="questions of the interleaved timing")
    args = parser.parse_args()
    if not args.table_only:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_llm_server("127.0.0.1", port, backend="smollm2,gemma3", model=",".join(MODELS),
                                  extra=["--parallel", "1", "--threads", "2"],
                                  log=log_file(str(ROOT / "var" / "logs"), "two-models-llm"))
        try:
            if not args.timing_only:
                for model in MODELS:
                    calibrate(url, model)
            timing = asyncio.run(interleaved_timing(url, args.questions))
        finally:
            stop(server, "LLM server")
        TIMING.write_text(json.dumps(timing, indent=1) + "\n")
    print("\n".join(table()))


if __name__ == "__main__":
    main()
