"""Running totals behind ``GET /metrics``: what changes in the tables of record, as counter deltas.

``/metrics`` used to aggregate ``questions`` and ``responses`` on every
request (about 15 statements, 3 s at 300,000 answers).  Instead every write
in :mod:`qastream.db.queries` and :mod:`qastream.db.imports` adds the deltas
of the rows it actually inserted or changed to the small ``stats`` table, in
the same transaction, so ``/metrics`` reads a bounded number of rows.  The
functions here are pure: they turn rows into deltas and stats rows into the
JSON, and the tests compare them with a full scan.

A counter is a ``(name, key)`` row holding ``n`` (a count or an integer sum)
and ``total`` (a float sum: the scores).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Mapping, Optional

from qastream.policy.lifecycle import State
from qastream.telemetry.stats import nearest_rank_index

RESPONSES = "responses"          # key "": stored answers
SCORED = "scored"                # key "": answers with a score; total: the sum of their scores
LOW_QUALITY = "low_quality"      # key "": answers kept below the threshold
ERROR_RETRIES = "error_retries"  # key "": sum of the stored answers' error retries
ATTEMPTS = "attempts"            # key: processing attempts
SCORE = "score"                  # key: score bucket index (SCORE_BUCKETS)
PROCESSING = "processing_ms"     # key: processing-time bucket index (processing_bucket)
STATUS = "status"                # key: question status
FAILED_CLASS = "failed_class"    # key: error class of the failed questions
BATCHES = "batches"              # key: batch status (qastream.policy.batches.BatchStatus)
ACCEPTED = "accepted"            # key: minute (minute_key): questions accepted (or taken again)
COMPLETED = "completed"          # key: minute: answers first stored
FAILED = "failed"                # key: minute: questions that turned failed
PROMPT_TOKENS = "prompt_tokens"  # key "": sum of the stored answers' prompt tokens
EVAL_TOKENS = "eval_tokens"      # key "": sum of their generated tokens; total: their generation ms
WASTED_TOKENS = "wasted_tokens"  # key "": sum of their tokens spent on attempts not kept
MINUTE_NAMES = (ACCEPTED, COMPLETED, FAILED)

#: Upper edges of the score histogram buckets (the last bucket is ``>= 0.9``).  A tenth wide:
#: the packaged MiniLM scorer spreads answers from about 0.1 to 0.9 around a 0.33 threshold.
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

#: Processing-time buckets per doubling: bucket ``i`` holds ``[2**(i/8), 2**((i+1)/8))`` ms, so the
#: geometric middle a percentile reports is within 4.5 % of the true value.  Below 1 ms goes to
#: bucket 0, above 2**24 ms (4.7 h) to the last: at most 193 rows, whatever the number of answers.
PROCESSING_STEPS_PER_DOUBLING = 8
PROCESSING_MAX_BUCKET = 24 * PROCESSING_STEPS_PER_DOUBLING

#: Minutes of throughput counters kept: the longest window (5) with room for late writes.
KEEP_MINUTES = 15

Deltas = dict[tuple[str, str], list[float]]


def new_deltas() -> Deltas:
    """An empty set of deltas: ``(name, key) -> [n, total]``."""
    return defaultdict(lambda: [0, 0.0])


def add(deltas: Deltas, name: str, key: str = "", n: int = 1, total: float = 0.0) -> None:
    entry = deltas[(name, key)]
    entry[0] += n
    entry[1] += total


def minute_key(seconds: float) -> str:
    """The minute of an epoch time as a key; zero-padded so keys sort as the minutes do."""
    return f"{int(seconds // 60):010d}"


def score_bucket(score: float) -> int:
    """Index of the score bucket, lower edges inclusive (0.2 is in ``0.20-0.30``)."""
    return next((i for i, edge in enumerate(SCORE_BUCKETS) if score < edge), len(SCORE_BUCKETS))


def score_labels() -> list[str]:
    labels = [f"<{SCORE_BUCKETS[0]:.2f}"]
    labels += [f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(SCORE_BUCKETS, SCORE_BUCKETS[1:])]
    return labels + [f">={SCORE_BUCKETS[-1]:.2f}"]


def processing_bucket(ms: float) -> int:
    if ms <= 1.0:
        return 0
    return min(PROCESSING_MAX_BUCKET, int(math.floor(math.log2(ms) * PROCESSING_STEPS_PER_DOUBLING)))


def processing_value(bucket: int) -> float:
    """The geometric middle of a processing-time bucket, in ms: what a percentile in it reports."""
    return 2 ** ((bucket + 0.5) / PROCESSING_STEPS_PER_DOUBLING)


def add_response(deltas: Deltas, row: Mapping[Any, Any], sign: int) -> None:
    """Count (``sign`` 1) or uncount (-1) a ``responses`` row; an overwritten answer is uncounted first."""
    add(deltas, RESPONSES, n=sign)
    if row["bert_score"] is not None:
        add(deltas, SCORED, n=sign, total=sign * row["bert_score"])
        add(deltas, SCORE, str(score_bucket(row["bert_score"])), sign)
    if row["low_quality"]:
        add(deltas, LOW_QUALITY, n=sign)
    add(deltas, ERROR_RETRIES, n=sign * row["error_retries"])
    add(deltas, ATTEMPTS, str(row["processing_attempts"]), sign)
    add(deltas, PROCESSING, str(processing_bucket(row["total_processing_time_ms"])), sign)
    # ``get``: migration 0003 counts rows of a database that has no token columns yet (0007 adds them).
    add(deltas, PROMPT_TOKENS, n=sign * (row.get("prompt_tokens") or 0))
    add(deltas, EVAL_TOKENS, n=sign * (row.get("eval_tokens") or 0), total=sign * (row.get("eval_ms") or 0.0))
    add(deltas, WASTED_TOKENS, n=sign * (row.get("wasted_tokens") or 0))


def add_transition(deltas: Deltas, old: Optional[tuple[str, Optional[str]]], new: tuple[str, Optional[str]]) -> None:
    """Move a question from ``old`` (status, error class; ``None`` when new) to ``new``."""
    if old == new:
        return
    if old is not None:
        add(deltas, STATUS, old[0], -1)
        if old[0] == State.FAILED:
            add(deltas, FAILED_CLASS, old[1] or "unknown", -1)
    add(deltas, STATUS, new[0])
    if new[0] == State.FAILED:
        add(deltas, FAILED_CLASS, new[1] or "unknown")


def rows_of(deltas: Deltas) -> list[dict[str, Any]]:
    """The non-zero deltas as ``stats`` rows, sorted so concurrent writers lock rows in one order."""
    return [{"name": name, "key": key, "n": n, "total": total}
            for (name, key), (n, total) in sorted(deltas.items()) if n or total]


def percentiles(buckets: Mapping[int, int], count: int) -> dict[str, Optional[float]]:
    """Nearest-rank p50/p95/p99 from the processing-time histogram (the middle of the bucket holding the rank)."""
    out: dict[str, Optional[float]] = {}
    ordered = sorted(buckets.items())
    for p in (50, 95, 99):
        out[f"p{p}"] = None
        if count <= 0:
            continue
        rank, seen = nearest_rank_index(count, p), 0
        for bucket, n in ordered:
            seen += n
            if seen > rank:
                out[f"p{p}"] = round(processing_value(bucket), 1)
                break
    return out


def fold(rows: Iterable[Any]) -> dict[str, Any]:
    """``stats`` rows (name, key, n, total) -> the database fields of ``/metrics``."""
    single: dict[str, tuple[int, float]] = {}
    keyed: dict[str, dict[str, int]] = defaultdict(dict)
    for row in rows:
        if row.key == "":
            single[row.name] = (int(row.n), float(row.total))
        elif row.n:
            keyed[row.name][row.key] = int(row.n)
    total = single.get(RESPONSES, (0, 0.0))[0]
    scored, score_sum = single.get(SCORED, (0, 0.0))
    labels = score_labels()
    failed_by_class = keyed[FAILED_CLASS]
    return {
        "total_responses": total,
        "scored_responses": scored,
        "average_score": round(score_sum / scored, 4) if scored else None,
        "low_quality_responses": single.get(LOW_QUALITY, (0, 0.0))[0],
        "attempts_distribution": {k: keyed[ATTEMPTS][k] for k in sorted(keyed[ATTEMPTS], key=int)},
        "score_distribution": {labels[i]: keyed[SCORE].get(str(i), 0) for i in range(len(labels))},
        "questions_by_status": keyed[STATUS],
        "batches_by_status": keyed[BATCHES],
        "dead_letters": sum(failed_by_class.values()),
        "dead_letters_by_class": failed_by_class,
        "error_retries_of_completed": single.get(ERROR_RETRIES, (0, 0.0))[0],
        "processing_time_ms": percentiles({int(k): n for k, n in keyed[PROCESSING].items()}, total),
        "tokens": token_figures(single, total),
    }


def token_figures(single: Mapping[str, tuple[int, float]], answers: int) -> dict[str, Any]:
    """What the stored answers cost in tokens, from the running totals."""
    prompt = single.get(PROMPT_TOKENS, (0, 0.0))[0]
    generated, eval_ms = single.get(EVAL_TOKENS, (0, 0.0))
    return {
        "prompt_tokens": prompt, "eval_tokens": generated,
        "wasted_tokens": single.get(WASTED_TOKENS, (0, 0.0))[0],
        "tokens_per_answer": round((prompt + generated) / answers, 1) if answers else None,
        "eval_tokens_per_second": round(generated / (eval_ms / 1000.0), 2) if eval_ms > 0 else None,
    }


def rates(rows: Iterable[Any], now: float, windows: Iterable[int]) -> dict[str, Any]:
    """Per-minute rates over each window from minute counters (name, key, n).

    A window of ``m`` minutes counts whole minutes from the one holding ``now - 60 m``:
    up to 59 s more than the window, the precision of per-minute counters.
    """
    counts = [(row.name, row.key, int(row.n)) for row in rows]
    out: dict[str, Any] = {}
    for name in MINUTE_NAMES:
        out[f"{name}_per_minute"] = {
            f"{m}m": round(sum(n for nm, key, n in counts if nm == name and key >= minute_key(now - 60 * m)) / m, 2)
            for m in windows}
    return out
