"""The quality report (``qastream report``): the seed's quality table, computed by the database.

Everything is an aggregate over ``responses`` (the kept answer of each
completed question) and ``questions`` (their states), so the report costs the
same for ten rows or ten million.  Score buckets are 0.1 wide: the packaged
scorer's F1 lives between about 0.2 and 0.9 (docs/quality.md), where the
coarser /metrics buckets would put most answers in one bucket.

Cost and models: tokens are the LLM server's own counts summed over every
attempt of a question (:mod:`qastream.policy.usage`); "per kept answer"
divides by the answers that carry counts (rows stored before migration 0007
have none).  An answer is *escalated* when the model that wrote it is not the
model of attempt 1 (``first_model``); the escalation gain counts escalated
answers that pass the gate: attempt 1 did not pass (it would have been kept),
so they passed only because another model wrote a later attempt.
"""

from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import Connection, and_, case, func, select

from qastream.db.queries import Q, R
from qastream.telemetry.stats import nearest_rank_index

BUCKETS = 10
BUCKET_WIDTH = 1 / BUCKETS


def bucket_label(index: int) -> str:
    low = index * BUCKET_WIDTH
    return f"{low:.1f}-{low + BUCKET_WIDTH:.1f}"


def _round(value: Optional[float], digits: int = 4) -> Optional[float]:
    return None if value is None else round(float(value), digits)


def _share(part: int, whole: int) -> Optional[float]:
    return round(part / whole, 4) if whole else None


def _percentile(connection: Connection, column: Any, count: int, p: int) -> Optional[float]:
    """Nearest-rank percentile of a non-null column (the definition of :mod:`qastream.telemetry.stats`, in SQL)."""
    if count == 0:
        return None
    rank = nearest_rank_index(count, p)
    value = connection.execute(select(column).where(column.is_not(None)).order_by(column)
                               .limit(1).offset(rank)).scalar()
    return _round(value, 1)


def _tokens_per_answer(tokens: Any, counted: Any) -> Optional[float]:
    return round(float(tokens) / int(counted), 1) if counted else None


def token_report(connection: Connection, threshold: float) -> dict[str, Any]:
    """Tokens spent and wasted, figures per model, and the gain from escalation."""
    tokens = R.c.prompt_tokens + R.c.eval_tokens
    counted = func.sum(case((tokens > 0, 1), else_=0))
    passed = and_(R.c.bert_score.is_not(None), R.c.bert_score >= threshold, R.c.low_quality.is_(False))
    totals = connection.execute(select(
        func.coalesce(func.sum(R.c.prompt_tokens), 0).label("prompt"),
        func.coalesce(func.sum(R.c.eval_tokens), 0).label("eval"),
        func.coalesce(func.sum(R.c.wasted_tokens), 0).label("wasted"),
        counted.label("counted"),
    )).one()
    models = []
    for r in connection.execute(select(
            R.c.model, func.count().label("n"), func.count(R.c.bert_score).label("scored"),
            func.sum(case((passed, 1), else_=0)).label("passed"), func.avg(R.c.bert_score).label("avg"),
            func.avg(R.c.total_processing_time_ms).label("latency"), func.avg(R.c.llm_time_ms).label("llm"),
            func.sum(tokens).label("tokens"), counted.label("counted"), func.sum(R.c.eval_tokens).label("eval"),
            func.sum(R.c.eval_ms).label("eval_ms"),
    ).group_by(R.c.model).order_by(R.c.model)):
        models.append({
            "model": r.model, "answers": int(r.n), "pass_rate": _share(int(r.passed or 0), int(r.scored)),
            "average_score": _round(r.avg), "average_latency_ms": _round(r.latency, 1),
            "average_llm_ms": _round(r.llm, 1), "tokens_per_kept_answer": _tokens_per_answer(r.tokens, r.counted),
            "eval_tokens_per_second": _round(float(r.eval) / (float(r.eval_ms) / 1000.0), 2) if r.eval_ms else None,
        })
    escalated = and_(R.c.first_model.is_not(None), R.c.model.is_not(None), R.c.model != R.c.first_model)
    escalation = connection.execute(select(
        func.count().label("n"), func.sum(case((passed, 1), else_=0)).label("passed"),
    ).where(escalated)).one()
    prompt, generated = int(totals.prompt), int(totals.eval)
    return {
        "prompt_tokens": prompt, "eval_tokens": generated, "wasted_tokens": int(totals.wasted),
        "tokens_per_kept_answer": _tokens_per_answer(prompt + generated, totals.counted),
        "wasted_share": _share(int(totals.wasted), prompt + generated),
        "by_model": models,
        "escalation": {"escalated": int(escalation.n), "passed_after_escalation": int(escalation.passed or 0)},
    }


def quality_report(connection: Connection, threshold: float, max_attempts: int = 3) -> dict[str, Any]:
    """The quality figures of every stored response, with ``threshold`` as the gate.

    The attempts distribution always lists 1..``max_attempts`` (zeros included).
    """
    scored = R.c.bert_score.is_not(None)
    totals = connection.execute(select(
        func.count().label("n"),
        func.count(R.c.bert_score).label("scored"),
        func.avg(R.c.bert_score).label("avg"),
        func.sum(case((and_(scored, R.c.bert_score < threshold), 1), else_=0)).label("below"),
        func.sum(case((R.c.low_quality.is_(True), 1), else_=0)).label("low"),
        func.avg(R.c.processing_attempts).label("avg_attempts"),
    )).one()
    total, scored_n = int(totals.n), int(totals.scored)
    attempts = {int(r.a): int(r.n) for r in connection.execute(
        select(R.c.processing_attempts.label("a"), func.count().label("n")).group_by(R.c.processing_attempts))}
    for k in range(1, max_attempts + 1):
        attempts.setdefault(k, 0)
    # Multiply, and nudge: 0.6 / 0.1 is 5.999... in floating point and would land in 0.5-0.6.
    raw = func.floor(R.c.bert_score * BUCKETS + 1e-9)
    index = func.min(func.max(raw, 0), BUCKETS - 1) if connection.dialect.name == "sqlite" else \
        func.least(func.greatest(raw, 0), BUCKETS - 1)
    by_bucket = {int(r.b): int(r.n) for r in connection.execute(
        select(index.label("b"), func.count().label("n")).where(scored).group_by("b"))}
    regenerated = and_(R.c.processing_attempts > 1, R.c.first_score.is_not(None), scored)
    gain = connection.execute(select(
        func.count().label("n"),
        func.avg(R.c.first_score).label("first"),
        func.avg(R.c.bert_score).label("kept"),
        func.sum(case((R.c.bert_score > R.c.first_score, 1), else_=0)).label("improved"),
        func.sum(case((R.c.bert_score >= threshold, 1), else_=0)).label("rescued"),
    ).where(regenerated)).one()
    first_pass = connection.execute(select(func.count()).where(
        and_(scored, R.c.processing_attempts == 1, R.c.bert_score >= threshold))).scalar()
    statuses = {r.status: int(r.n) for r in connection.execute(
        select(Q.c.status, func.count().label("n")).group_by(Q.c.status))}
    times = {f"p{p}": _percentile(connection, R.c.total_processing_time_ms, total, p) for p in (50, 95, 99)}
    n_gain = int(gain.n)
    return {
        "threshold": threshold,
        "total_responses": total,
        "scored_responses": scored_n,
        "average_score": _round(totals.avg),
        "average_attempts": _round(totals.avg_attempts, 3),
        "attempts_distribution": {str(k): attempts[k] for k in sorted(attempts)},
        "attempts_share": {str(k): _share(attempts[k], total) for k in sorted(attempts)},
        "score_buckets": {bucket_label(i): by_bucket.get(i, 0) for i in range(BUCKETS)},
        "below_threshold": int(totals.below or 0),
        "share_below_threshold": _share(int(totals.below or 0), scored_n),
        "passed_first_attempt": int(first_pass or 0),
        "low_quality": int(totals.low or 0),
        "regeneration": {
            "regenerated": n_gain,
            "average_first_score": _round(gain.first),
            "average_kept_score": _round(gain.kept),
            "average_gain": _round(gain.kept - gain.first) if n_gain else None,
            "improved": int(gain.improved or 0),
            "passed_after_regeneration": int(gain.rescued or 0),
        },
        "questions_by_status": dict(sorted(statuses.items())),
        "processing_time_ms": times,
        "tokens": token_report(connection, threshold),
    }


def render_report(report: dict[str, Any]) -> list[str]:
    """The report as a text table."""
    total = report["total_responses"]

    def pct(n: int, whole: int) -> str:
        return f"{n / whole:6.1%}" if whole else "     -"

    lines = [
        f"{'responses':<34}{total:>8}",
        f"{'scored':<34}{report['scored_responses']:>8}",
        f"{'average score':<34}{_fmt(report['average_score'])}",
        f"{'average attempts':<34}{_fmt(report['average_attempts'], 2)}",
        "attempts",
    ]
    for k, n in report["attempts_distribution"].items():
        lines.append(f"  {k:<32}{n:>8}  {pct(n, total)}")
    lines.append("score buckets (F1)")
    scored = report["scored_responses"]
    top = max(report["score_buckets"].values(), default=0) or 1
    for label, n in report["score_buckets"].items():
        lines.append(f"  {label:<32}{n:>8}  {pct(n, scored)}  {'#' * round(n * 30 / top)}")
    t = report["threshold"]
    lines += [
        f"{f'below threshold {t:.2f}':<34}{report['below_threshold']:>8}  {pct(report['below_threshold'], scored)}",
        f"{'passed at the first attempt':<34}{report['passed_first_attempt']:>8}  "
        f"{pct(report['passed_first_attempt'], scored)}",
        f"{'low quality (kept after last try)':<34}{report['low_quality']:>8}  {pct(report['low_quality'], total)}",
    ]
    g = report["regeneration"]
    lines += [
        "regeneration (attempts > 1)",
        f"  {'questions':<32}{g['regenerated']:>8}",
        f"  {'average first-attempt score':<32}{_fmt(g['average_first_score'])}",
        f"  {'average kept score':<32}{_fmt(g['average_kept_score'])}",
        f"  {'average gain':<32}{_fmt(g['average_gain'])}",
        f"  {'improved':<32}{g['improved']:>8}  {pct(g['improved'], g['regenerated'])}",
        f"  {'passed after regenerating':<32}{g['passed_after_regeneration']:>8}  "
        f"{pct(g['passed_after_regeneration'], g['regenerated'])}",
        "questions by status  " + ", ".join(f"{k} {v}" for k, v in report["questions_by_status"].items()),
        "processing time ms   " + ", ".join(f"{k} {_fmt(v, 1).strip()}" for k, v in report["processing_time_ms"].items()),
    ]
    return lines + render_tokens(report["tokens"])


def render_tokens(tokens: dict[str, Any]) -> list[str]:
    """The token and model part of the report as text."""
    share = "     -" if tokens["wasted_share"] is None else f"{tokens['wasted_share']:6.1%}"
    lines = [
        "tokens (all attempts)",
        f"  {'prompt':<32}{tokens['prompt_tokens']:>8}",
        f"  {'generated':<32}{tokens['eval_tokens']:>8}",
        f"  {'wasted on rejected attempts':<32}{tokens['wasted_tokens']:>8}  {share}",
        f"  {'per kept answer':<32}{_fmt(tokens['tokens_per_kept_answer'], 1)}",
        f"{'by model':<26}{'answers':>8}{'pass':>8}{'score':>8}{'ms':>9}{'llm ms':>9}{'tok/ans':>9}{'tok/s':>8}",
    ]
    for m in tokens["by_model"]:
        rate = "-" if m["pass_rate"] is None else f"{m['pass_rate']:.1%}"
        lines.append(f"  {str(m['model'])[:24]:<24}{m['answers']:>8}{rate:>8}{_fmt(m['average_score'], 3).strip():>8}"
                     f"{_fmt(m['average_latency_ms'], 0).strip():>9}{_fmt(m['average_llm_ms'], 0).strip():>9}"
                     f"{_fmt(m['tokens_per_kept_answer'], 1).strip():>9}"
                     f"{_fmt(m['eval_tokens_per_second'], 1).strip():>8}")
    e = tokens["escalation"]
    lines += [
        "escalation (kept answer by another model than attempt 1)",
        f"  {'escalated':<32}{e['escalated']:>8}",
        f"  {'passed only after escalating':<32}{e['passed_after_escalation']:>8}",
    ]
    return lines


def _fmt(value: Optional[float], digits: int = 4) -> str:
    return f"{'-':>8}" if value is None else f"{value:>8.{digits}f}"
