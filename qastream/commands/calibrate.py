"""``qastream calibrate``: measure where the scorer's F1 separates right answers from wrong ones.

Generates real answers with the embedded SmolLM2 server (or any Ollama
server) for a random sample of FOLDOC and Jargon File entries, scores them
with the configured BERTScore model, and recommends a threshold by the
criterion of :mod:`qastream.devtools.calibration`.  Four distributions are measured,
each pair scored as (candidate, reference):

* ``llm_own`` -- the LLM's answer against its own question's reference: the
  positives.  SmolLM2-135M is often wrong, so these are *weak* positives: on
  topic, not necessarily correct.
* ``llm_other`` -- the same answer against another sampled question's
  reference: the negatives (an answer to a different question).
* ``reference_half`` -- the first half of the reference (by words) against
  the whole reference: a correct but incomplete answer, an upper anchor.
* ``reference_other`` -- another question's reference against this one: a
  fluent, on-domain, human-written but wrong answer, a lower anchor.
* ``question_echo`` -- the question text itself against its reference: an
  answer with no content beyond naming the term (what the echo backend
  answers), to show what a vacuous answer scores.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import click
from faust.cli import option
from tqdm import tqdm

from qastream.app import app, settings
from qastream.datasets import BadRows, Record, open_datasets
from qastream.datasets.records import sample
from qastream.devtools import calibration
from qastream.devtools.embedded import free_port, log_file, start_llm_server, stop
from qastream.devtools.llmserver.backends import MODEL_NAMES, BackendName
from qastream.errors import LLM_CALL_ERRORS
from qastream.services.llm import LLMClient

logger = logging.getLogger(__name__)

DESCRIPTIONS = {
    "llm_own": "LLM answer vs its own question's reference (positives; weak: SmolLM2 is often wrong)",
    "llm_other": "LLM answer vs another sampled question's reference (negatives)",
    "reference_half": "first half of the reference (by words) vs the whole reference (correct but incomplete)",
    "reference_other": "another question's reference vs this reference (fluent, on-domain, wrong)",
    "question_echo": "the question itself vs its reference (an answer that only restates the question)",
}


def derangement(n: int, seed: int) -> list[int]:
    """``other[i] != i`` for every i: each item is paired with a different, randomly chosen one."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    other = [0] * n
    for k, i in enumerate(order):
        other[i] = order[(k + 1) % n]
    return other


def first_half(text: str) -> str:
    words = text.split()
    return " ".join(words[: max(1, math.ceil(len(words) / 2))])


async def generate_all(client: LLMClient, records: list[Record], concurrency: int) -> list[Optional[str]]:
    """The LLM's answer to each record, ``None`` where the call failed."""
    answers: list[Optional[str]] = [None] * len(records)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(records)):
        queue.put_nowait(i)
    bar = tqdm(total=len(records), desc="generating", unit="answer")

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            try:
                answers[i] = (await client.generate(records[i].question)).text
            except LLM_CALL_ERRORS as err:
                logger.warning("generation for %r failed: %s", records[i].question, err)
            bar.update(1)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    bar.close()
    return answers


def score_pairs(scorer: Any, candidates: list[str], references: list[str], batch: int = 32) -> list[float]:
    """BERTScore F1 of each pair, with a progress bar."""
    scores: list[float] = []
    with tqdm(total=len(candidates), desc="scoring", unit="pair") as bar:
        for start in range(0, len(candidates), batch):
            _, _, f1 = scorer.score(candidates[start:start + batch], references[start:start + batch],
                                    batch_size=batch)
            scores.extend(round(float(x), 4) for x in f1.tolist())
            bar.update(len(f1))
    return scores


def build_report(records: list[Record], answers: list[str], scores: dict[str, list[float]], *,
                 current_threshold: float, meta: dict[str, Any], seed: int) -> dict[str, Any]:
    """Everything the calibration measured, as saved to JSON."""
    recommendation = calibration.recommend(scores["llm_own"], scores["llm_other"], seed=seed)
    threshold = recommendation.best.threshold
    distributions = {}
    for name, values in scores.items():
        distributions[name] = {
            "description": DESCRIPTIONS[name],
            **asdict(calibration.summarise(values)),
            "share_at_or_above_recommended": round(calibration.share_at_least(sorted(values), threshold), 4),
            "share_at_or_above_current": round(calibration.share_at_least(sorted(values), current_threshold), 4),
            "histogram": calibration.histogram(values),
        }
    return {
        **meta,
        "distributions": distributions,
        "recommendation": recommendation.as_dict(),
        "current_threshold": asdict(calibration.operating_point(scores["llm_own"], scores["llm_other"],
                                                                current_threshold)),
        "items": [{"question": r.question, "source": r.category, "reference": r.answer, "answer": a,
                   **{name: scores[name][i] for name in scores}} for i, (r, a) in enumerate(zip(records, answers))],
    }


def render(report: dict[str, Any]) -> list[str]:
    """The report as text: distributions, histograms, recommendation."""
    lines = [f"calibration of {report['scorer']['model']} layer {report['scorer']['layer']} on "
             f"{report['sample_size']} answers of {report['llm']['model']} ({', '.join(report['datasets'])})", ""]
    items = report["items"]
    for name, dist in report["distributions"].items():
        q = dist["quantiles"]
        lines += [f"{name}: {dist['description']}",
                  f"  n={dist['n']} mean={dist['mean']} min={q['p0']} p5={q['p5']} p25={q['p25']} "
                  f"median={q['p50']} p75={q['p75']} p95={q['p95']} max={q['p100']}",
                  *("  " + row for row in calibration.text_histogram([item[name] for item in items])), ""]
    rec, cur = report["recommendation"], report["current_threshold"]
    best = rec["best"]
    lines += [
        f"criterion: {rec['criterion']}",
        f"recommended threshold {best['threshold']:.2f}: keeps {best['tpr']:.1%} of llm_own, lets through "
        f"{best['fpr']:.1%} of llm_other (J={best['youden_j']:.3f}, balanced accuracy "
        f"{best['balanced_accuracy']:.1%}); AUC {rec['auc']:.3f}; bootstrap 5-95 % range of the threshold "
        f"{rec['bootstrap_low']}-{rec['bootstrap_high']} ({rec['bootstrap_rounds']} rounds)",
        f"current threshold {cur['threshold']:.2f}: keeps {cur['tpr']:.1%} of llm_own, lets through "
        f"{cur['fpr']:.1%} of llm_other (J={cur['youden_j']:.3f})",
    ]
    return lines


@app.command(
    option("--dataset", "datasets", multiple=True, default=["foldoc", "jargon"], show_default=True,
           help="Data set(s) to sample questions from (repeat the option)."),
    option("--sample", "sample_size", type=int, default=150, show_default=True, help="Questions to calibrate on."),
    option("--seed", type=int, default=7, show_default=True, help="Seed of the sample and the pairing."),
    option("--ollama-url", default=None,
           help="Use this running Ollama-compatible server instead of starting the embedded smollm2 one."),
    option("--llm-backend", type=click.Choice([b.value for b in BackendName]), default=BackendName.SMOLLM2.value,
           show_default=True, help="Backend of the embedded server started when --ollama-url is not given."),
    option("--model", default=None,
           help="Model to ask. Default: QASTREAM_OLLAMA_MODEL with --ollama-url, else the embedded backend's "
                "own name (" + ", ".join(f"{name} for {b.value}" for b, name in MODEL_NAMES.items()) + ")."),
    option("--llm-threads", type=int, default=2, show_default=True, help="CPU threads of the embedded server."),
    option("--output", default="docs/calibration.json", show_default=True, help="Where to save the figures."),
)
async def calibrate(self, datasets: tuple[str, ...], sample_size: int, seed: int, ollama_url: Optional[str],
                    llm_backend: str, model: Optional[str], llm_threads: int, output: str) -> None:
    """Score real LLM answers against their own and other references; recommend a scorer threshold."""
    bad = BadRows()
    try:
        records = sample(open_datasets(list(datasets), bad), sample_size, seed)
    except (FileNotFoundError, ValueError) as exc:
        # A message and exit code 2, not the traceback an exception inside a Faust command prints.
        self.say(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if len(records) < 2:
        raise click.ClickException(f"need at least 2 questions, the data set gave {len(records)}")
    self.say(f"sampled {len(records)} questions from {', '.join(datasets)} (seed {seed})")
    server = None
    if model is None:
        model = settings.ollama_model if ollama_url is not None else MODEL_NAMES[BackendName(llm_backend)]
    if ollama_url is None:
        port = free_port()
        ollama_url = f"http://127.0.0.1:{port}"
        logs = Path(settings.data_dir) / "logs"
        self.say(f"starting the embedded LLM server ({llm_backend}) on {ollama_url} (log in {logs}/)")
        server = await asyncio.get_running_loop().run_in_executor(None, lambda: start_llm_server(
            "127.0.0.1", port, backend=llm_backend, model=model,
            extra=["--parallel", "1", "--threads", str(llm_threads)], log=log_file(str(logs), "calibrate-llm")))
    client = LLMClient(ollama_url, model, timeout=max(settings.llm_timeout_seconds, 300.0),
                       concurrency=2, max_tokens=settings.llm_max_tokens, temperature=settings.llm_temperature)
    started = time.perf_counter()
    try:
        await client.start()
        generated = await generate_all(client, records, concurrency=2)
    finally:
        await client.stop()
        if server is not None:
            stop(server, "LLM server")
    generation_seconds = time.perf_counter() - started
    kept = [(r, a) for r, a in zip(records, generated) if a and a.strip()]
    if len(kept) < 2:
        raise click.ClickException(f"only {len(kept)} answers were generated; see the LLM server's log")
    sampled = len(records)
    records, answers = [r for r, _ in kept], [a for _, a in kept if a]
    refs = [r.answer for r in records]
    other = derangement(len(records), seed)
    self.say("loading the scorer")
    from qastream.services.scorer import load_scorer

    scorer = load_scorer(settings.scorer_model, settings.scorer_layer, settings.scorer_threads)
    n = len(records)
    candidates = (answers + answers + [first_half(r) for r in refs] + [refs[other[i]] for i in range(n)]
                  + [r.question for r in records])
    references = refs + [refs[other[i]] for i in range(n)] + refs + refs + refs
    flat = score_pairs(scorer, candidates, references)
    scores = {name: flat[k * n:(k + 1) * n] for k, name in enumerate(DESCRIPTIONS)}
    meta = {
        "command": "qastream calibrate " + " ".join([*(f"--dataset {d}" for d in datasets), f"--sample {sample_size}",
                                                    f"--seed {seed}", f"--model {model}"]),
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "datasets": list(datasets), "seed": seed, "sample_requested": sample_size, "sample_size": n,
        "failed_generations": sampled - n,
        "generation_seconds": round(generation_seconds, 1),
        "llm": {"url": ollama_url if server is None else f"embedded {llm_backend}", "model": model,
                "max_tokens": settings.llm_max_tokens, "temperature": settings.llm_temperature},
        "scorer": {"model": settings.scorer_model or "all-MiniLM-L6-v2 (packaged)", "layer": settings.scorer_layer,
                   "rescale_with_baseline": False},
        "skipped_rows": bad.as_dict(),
    }
    report = build_report(records, answers, scores, current_threshold=settings.scorer_threshold, meta=meta,
                          seed=seed)
    for line in render(report):
        self.say(line)
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    self.say(f"figures saved to {path}")
