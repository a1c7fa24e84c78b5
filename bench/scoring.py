"""Scoring: the validate stage's throughput inside the pipeline vs the raw batched BERTScorer rate.

``--questions`` FOLDOC definitions (``--min-words``..``--max-words`` words;
Debian's dict-foldoc, installed by ``make``) become questions whose text is
the definition, with the definition as reference answer.  The echo LLM
answers instantly with the question, so every answer is a real-length text
that passes at the first attempt.  The questions are loaded into the
database and the pending topic with ``qastream load --via kafka`` before the
worker starts; the worker (scorer on) then drains the backlog.  The LLM is
instant, so the backlog moves to llm-responses-success within seconds and
the validate stage is the bottleneck.

* Pipeline rate: steady-state rate of the records validate produces to
  validated-responses (their producer timestamps; least-squares slope over
  the middle 80 %).
* Raw rate: in this process, with the worker idle, ``load_scorer`` (the
  worker's loader: same packaged model, layer, thread count) scores the same
  (answer, reference) pairs with ``BERTScorer.score`` in batches of the
  worker's batch size.

The last line is pipeline / raw (target >= 0.8).

    .venv/bin/python bench/scoring.py [--runs 3] [--questions 400]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kafka_io import topic_timestamps  # noqa: E402
from measure import steady_rate  # noqa: E402
from runner import median_of, run_benchmark  # noqa: E402
from stack import Stack, get_json, sqlite_scalar, wait_stored  # noqa: E402

from qastream.settings import Settings  # noqa: E402


def definitions(count: int, min_words: int, max_words: int, seed: int) -> list[str]:
    """FOLDOC definitions of a realistic answer length; synthetic text if FOLDOC is not installed."""
    try:
        from qastream.datasets import BadRows
        from qastream.datasets.dictd import read_dictd

        texts = [r.answer for r in read_dictd("foldoc", BadRows(), min_words=min_words, max_words=max_words)]
    except (FileNotFoundError, ValueError):
        print("dict-foldoc is not installed (make installs it): using synthetic answers", file=sys.stderr)
        words = ("stream partition broker consumer offset record table changelog agent worker answer score "
                 "question model token batch latency throughput cache database").split()
        rng = random.Random(seed)
        texts = [" ".join(rng.choice(words) for _ in range(rng.randint(min_words, max_words)))
                 for _ in range(count * 2)]
    random.Random(seed).shuffle(texts)
    return texts[:count]


def raw_rate(pairs: list[tuple[str, str]], settings: Settings) -> float:
    """Pairs/s of BERTScorer.score on ``pairs`` with the worker's model, layer, threads and batch size."""
    from qastream.services.scorer import load_scorer

    scorer = load_scorer(settings.scorer_model, settings.scorer_layer, settings.scorer_threads)
    scorer.score([pairs[0][0]], [pairs[0][1]])  # first call warms torch up, as the worker's first batch does
    size = settings.scorer_batch_size
    started = time.perf_counter()
    for i in range(0, len(pairs), size):
        chunk = pairs[i:i + size]
        scorer.score([c for c, _ in chunk], [r for _, r in chunk], batch_size=size)
    return len(pairs) / (time.perf_counter() - started)


def one_run(args: argparse.Namespace, index: int, texts: list[str]) -> dict:
    token = uuid.uuid4().hex[:8]
    settings = Settings()
    with Stack("scoring", keep=args.keep) as stack:
        stack.start_broker()
        stack.start_llm(latency=0, parallel=64)
        questions = [f"Explain ({token}): {text}" for text in texts]
        data = stack.workdir / "questions.jsonl"
        data.write_text("".join(json.dumps({"question_text": q, "original_answer": t}) + "\n"
                                for q, t in zip(questions, texts)))
        stack.qastream("load", str(data), "--via", "kafka", "--concurrency", "32", scorer_enabled=True)
        stack.start_worker(scorer_enabled=True, llm_concurrency=32)
        wait_stored(stack, len(questions), timeout=len(questions) * 2 + 120)
        scorer_info = get_json(f"{stack.url}/metrics")["scorer"]
        passed = sqlite_scalar(stack.db_path, "SELECT count(*) FROM responses WHERE processing_attempts = 1 "
                                     "AND NOT low_quality")
        stamps = topic_timestamps(stack.bootstrap, settings.topic_validated)
        pipeline = steady_rate(stamps)
        # The answer the pipeline scored is the echo of the question (stripped), the reference its text.
        raw = raw_rate([(q.strip(), t) for q, t in zip(questions, texts)], settings)
    result = {"run": index, "questions": len(questions), "first_attempt_pass": passed,
              "pipeline_pairs_per_s": round(pipeline, 2),
              "in_worker_scorer_pairs_per_s": scorer_info.get("pairs_per_second"),
              "raw_pairs_per_s": round(raw, 2), "ratio": round(pipeline / raw, 3)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--min-words", type=int, default=40)
    parser.add_argument("--max-words", type=int, default=110)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    texts = definitions(args.questions, args.min_words, args.max_words, args.seed)
    words = sum(len(t.split()) for t in texts) / len(texts)
    run_benchmark("scoring", args.runs, lambda index: {"answers": len(texts), "mean_words": round(words, 1),
                                                       **one_run(args, index, texts)}, [
        ("pipeline_pairs_per_s", "validate stage in the pipeline, answers/s", 2),
        ("in_worker_scorer_pairs_per_s", "time inside BERTScorer.score in the worker, pairs/s", 2),
        ("raw_pairs_per_s", "raw batched BERTScorer.score, pairs/s", 2),
        ("ratio", "pipeline / raw (target >= 0.8)", 3),
    ], lambda runs: f"validator / raw scorer = {median_of(runs, 'ratio'):.3f} (target >= 0.8)")


if __name__ == "__main__":
    main()
