"""Migrations 0002-0007 on PostgreSQL: a populated 0001 database upgrades in place, its main queries use the
indexes and the running totals 0003 fills equal a scan; 0004's key tables, 0005's batches and 0006's webhook
deliveries work on questions asked before them; 0007's token columns rewrite no row."""

import pytest
from alembic import command
from sqlalchemy import inspect, select, text
from totals_scenario import scanned

from qastream.db import batches, inflight, keys, owners, queries, recent, totals, webhooks
from qastream.db.inflight import OVER_LIMIT
from qastream.db.migrate import alembic_config, upgrade
from qastream.db.queries import Failure, Q, R, StoredAnswer, Submission
from qastream.policy.access import Limits, Scope
from qastream.policy.keys import hash_key, new_key
from qastream.policy.usage import Usage
from qastream.policy.webhooks import DeliveryState, EventKind
from qastream.services.storage import make_engine

NOW = 1_700_000_000.0
BULK = 50_000  # enough rows that a sort or a sequential scan would cost more than the index


def qid(n):
    return f"{n:016x}"


class Recorder:
    """A stand-in connection that keeps the first statement a query function runs, then stops it."""

    dialect = type("Dialect", (), {"name": "postgresql"})()

    def __init__(self):
        self.statement = None

    def execute(self, statement, *args):
        self.statement = statement
        raise LookupError


def statement_of(call):
    recorder = Recorder()
    with pytest.raises(LookupError):
        call(recorder)
    return recorder.statement


def explain(connection, statement) -> str:
    compiled = statement.compile(connection)
    return "\n".join(connection.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params).scalars())


def populate(connection):
    """A few rows through the stage code, then a year's worth in bulk: mostly completed, some pending and failed."""
    queries.accept(connection, [Submission(qid(i), f"question {i}", None, NOW - 1000 + i) for i in range(30)])
    queries.save_completed(connection, [StoredAnswer(
        question_id=qid(i), question_text=f"question {i}", original_answer="ref", accepted_at=NOW - 1000 + i,
        epoch=1, answer=f"answer {i}", score=0.5, first_score=0.5, processing_attempts=1, error_retries=0,
        total_processing_time_ms=float(i), llm_time_ms=1.0, low_quality=False, model="m", at=NOW - 500 + i,
    ) for i in range(0, 30, 3)])
    queries.save_failed(connection, [Failure(qid(1), "question 1", None, NOW - 999, 1, "permanent", "404", NOW - 10)])
    connection.execute(text(f"""
        INSERT INTO questions (question_id, question_text, status, epoch, accepted_at, updated_at)
        SELECT lpad(to_hex(1000000 + g), 16, '0'), 'bulk question ' || g,
               CASE WHEN g % 100 = 0 THEN 'pending' WHEN g % 100 = 1 THEN 'failed' ELSE 'completed' END, 1,
               to_timestamp({NOW} - 40000000 + g * 600), to_timestamp({NOW} - 40000000 + g * 600 + 5)
        FROM generate_series(1, {BULK}) AS g"""))
    connection.execute(text("""
        INSERT INTO responses (question_id, answer, bert_score, processing_attempts, error_retries,
                               total_processing_time_ms, llm_time_ms, low_quality, created_at, updated_at)
        SELECT question_id, 'bulk answer', 0.5, 1, 0, 1000, 10, false, updated_at, updated_at
        FROM questions WHERE status = 'completed' AND question_text LIKE 'bulk%'"""))


def snapshot(connection):
    return (connection.execute(select(Q).where(Q.c.question_text.not_like("bulk%")).order_by(Q.c.question_id)).all(),
            connection.execute(select(R).where(R.c.answer != "bulk answer").order_by(R.c.question_id)).all(),
            connection.execute(select(text("count(*)")).select_from(Q)).scalar_one(),
            connection.execute(select(text("count(*)")).select_from(R)).scalar_one())


def populated_at(engine, revision: str):
    """Populate at head (the stage code writes the running totals too), go back to ``revision``; the snapshot."""
    upgrade(engine)
    with engine.begin() as connection:
        populate(connection)
        before = snapshot(connection)
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)
    return before


def test_0002_upgrades_a_populated_0001_postgres_database(postgres_url):
    engine = make_engine(postgres_url)
    try:
        before = populated_at(engine, "0001")
        upgrade(engine)
        with engine.begin() as connection:
            assert snapshot(connection) == before
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0007"
            kept, scan = totals.read(connection), scanned(connection)
            assert list(kept.pop("score_distribution").values()) == scan.pop("score_distribution")
            assert kept.pop("processing_time_ms") == pytest.approx(scan.pop("processing_time_ms"), rel=0.045)
            assert kept == scan and kept["total_responses"] > 49_000
            connection.execute(text("ANALYZE questions; ANALYZE responses"))
        inspector = inspect(engine)
        assert {i["name"] for i in inspector.get_indexes("questions")} == {
            "ix_questions_status_accepted_at", "ix_questions_status_updated_at", "ix_questions_accepted_at"}
        assert {i["name"] for i in inspector.get_indexes("responses")} == {
            "ix_responses_updated_at_question_id", "ix_responses_created_at", "ix_responses_total_processing_time_ms"}
        with engine.begin() as connection:
            # 500 of the bulk rows are pending: fewer than reconciliation's default limit (1000), so the planner
            # may fetch them all by status and sort those few; with a smaller limit it must read the index in order.
            for call, index in ((lambda c: recent.latest_answers(c, 20), "ix_responses_updated_at_question_id"),
                                (lambda c: queries.pending_before(c, NOW, 100), "ix_questions_status_accepted_at"),
                                (lambda c: queries.failed(c, 100), "ix_questions_status_updated_at")):
                plan = explain(connection, statement_of(call))
                assert index in plan and "Seq Scan" not in plan and "Sort" not in plan, plan
            plan = explain(connection, statement_of(lambda c: queries.pending_before(c, NOW, 1000)))
            assert "Index" in plan and "Seq Scan" not in plan, plan
            latest = recent.latest_answers(connection, 2)
            assert [a["question_id"] for a in latest] == [qid(27), qid(24)]  # stored at NOW - 473, NOW - 476
    finally:
        engine.dispose()


def test_0004_on_a_populated_0003_postgres_database(postgres_url):
    engine = make_engine(postgres_url)
    try:
        before = populated_at(engine, "0003")
        assert "api_keys" not in inspect(engine).get_table_names()
        upgrade(engine)
        with engine.begin() as connection:
            assert snapshot(connection) == before
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0007"
            key = new_key()
            keys.create(connection, "ci", hash_key(key), frozenset({Scope.SUBMIT}), Limits(max_in_flight=1), NOW)
            principal = keys.lookup(connection, hash_key(key)).principal
            # qid(0) was answered before the upgrade, qid(2) is still pending: asked now, the key owns both.
            outcomes = inflight.accept(connection, [queries.Submission(qid(i), f"question {i}", None, NOW, principal)
                                                    for i in (0, 2, 4)])
            assert [o.kind for o in outcomes] == [queries.FOUND, queries.IN_FLIGHT, OVER_LIMIT]
            assert owners.owns(connection, principal.key_id, qid(2))
            queries.save_failed(connection, [Failure(qid(2), "question 2", None, NOW, 1, "permanent", "x", NOW + 1)])
            assert owners.open_counts(connection, [principal.key_id]) == {principal.key_id: 0}
            dump = connection.execute(text("SELECT string_agg(t::text, ' ') FROM api_keys t")).scalar_one()
            assert key not in dump and hash_key(key) in dump
            # Few rows here, so a scan is cheapest: what matters is that the partial indexes serve these predicates.
            connection.execute(text("SET LOCAL enable_seqscan = off"))
            for column, index in ((owners.OWN.c.key_id, "ix_question_owners_open_key_id"),
                                  (owners.OWN.c.question_id, "ix_question_owners_open_question_id")):
                statement = select(owners.OWN.c.key_id).where(column == "1", owners.OWN.c.open)
                compiled = statement.compile(connection, compile_kwargs={"literal_binds": True})
                plan = "\n".join(connection.exec_driver_sql(f"EXPLAIN {compiled}").scalars())
                assert index in plan, plan
    finally:
        engine.dispose()


def test_0005_on_a_populated_0004_postgres_database(postgres_url):
    engine = make_engine(postgres_url)
    try:
        before = populated_at(engine, "0004")
        assert "batches" not in inspect(engine).get_table_names()
        upgrade(engine)
        with engine.begin() as connection:
            assert snapshot(connection) == before
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0007"
            counted = totals.read(connection)
            # A batch over questions from before the upgrade: bulk ones answered, pending and failed, and new ones.
            olds = [f"{1000000 + g:016x}" for g in range(1, 41)]
            batches.create_within(connection, batches.NewBatch("batch_pg", 50, NOW, None, None, None), 50, None)
            texts = {r.question_id: r.question_text for r in connection.execute(
                select(Q.c.question_id, Q.c.question_text).where(Q.c.question_id.in_(olds)))}
            items = [batches.Item(n, str(n), queries.Submission(old, texts[old], None, NOW))
                     for n, old in enumerate(olds, start=1)]
            items += [batches.Item(41 + n, None, queries.Submission(qid(900 + n), f"new {n}", None, NOW))
                      for n in range(10)]
            batches.accept_items(connection, "batch_pg", items)
            batch = batches.get(connection, "batch_pg")
            counts = batches.counts(connection, batch)
            assert counts.total == 50 and counts.completed == 39  # g = 1 failed -> resubmitted, the rest completed
            after, cancelled = batches.cancel(connection, "batch_pg", NOW + 1)
            assert after.status == "cancelling" and len(cancelled) == 11
            assert batches.counts(connection, after).cancelled == 11
            # The bulk rows bypassed the running totals (written by SQL at 0004): compare what the batch moved.
            kept = totals.read(connection)
            moved = {s: kept["questions_by_status"].get(s, 0) - counted["questions_by_status"].get(s, 0)
                     for s in ("pending", "failed", "cancelled", "completed")}
            assert moved == {"pending": 0, "failed": -1, "cancelled": 11, "completed": 0}
            assert kept["batches_by_status"] == scanned(connection)["batches_by_status"] == {"cancelling": 1}
            connection.execute(text("ANALYZE questions; ANALYZE responses; ANALYZE batch_items; ANALYZE batches"))
        with engine.begin() as connection:
            # What a request reads of a batch is bounded by the batch: its items by their primary key, joined by key.
            for call in (lambda c: batches.counts(c, batches.get(c, "batch_pg")),
                         lambda c: batches.results(c, "batch_pg", 0, 500),
                         lambda c: batches.latest(c, 10), lambda c: batches.latest(c, 10, owner=1)):
                plan = explain(connection, statement_of(call))
                assert "Seq Scan on questions" not in plan and "Seq Scan on responses" not in plan, plan
    finally:
        engine.dispose()


def test_0006_on_a_populated_0004_postgres_database(postgres_url):
    engine = make_engine(postgres_url)
    try:
        before = populated_at(engine, "0004")
        assert "webhook_deliveries" not in inspect(engine).get_table_names()
        upgrade(engine)
        with engine.begin() as connection:
            assert snapshot(connection) == before
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0007"
            queries.accept(connection, [Submission(qid(2), "question 2", None, NOW, webhook_url="https://h.example/")])
            assert webhooks.targets(connection, [qid(0), qid(2)]) == {qid(2): "https://h.example/"}
            made = webhooks.insert(connection, [webhooks.NewDelivery(f"{i:032x}", EventKind.QUESTION_COMPLETED,
                                                                     qid(i), "https://h.example/", "{}", NOW)
                                                for i in range(3)])
            assert [created for _, created in made] == [True, True, True]
            again = webhooks.insert(connection, [webhooks.NewDelivery(f"{1:032x}", EventKind.QUESTION_COMPLETED,
                                                                      qid(1), "https://other.example/", "{}", NOW)])
            assert [(d.url, created) for d, created in again] == [("https://h.example/", False)]
            assert webhooks.claim(connection, f"{1:032x}", 1, NOW) and not webhooks.claim(connection, f"{1:032x}", 1, NOW)
            assert webhooks.record(connection, f"{1:032x}", 1, DeliveryState.DELIVERED, 200, None, NOW + 1)
            assert [d.state for d in webhooks.of_subject(connection, qid(1))] == [DeliveryState.DELIVERED]
            assert sorted(d.delivery_id for d in webhooks.take_stale(connection, NOW + 1, NOW + 2, 10)) == [
                f"{0:032x}", f"{2:032x}"]
    finally:
        engine.dispose()


def test_0007_adds_token_columns_to_a_populated_0006_postgres_database_without_rewriting_it(postgres_url):
    engine = make_engine(postgres_url)
    try:
        before = populated_at(engine, "0006")
        assert "wasted_tokens" not in {c["name"] for c in inspect(engine).get_columns("responses")}
        upgrade(engine)
        with engine.begin() as connection:
            assert snapshot(connection) == before
            # A constant default is kept in the catalogue (PostgreSQL 11+ "fast default"): no row was rewritten.
            missing = dict(connection.execute(text(
                "SELECT attname, atthasmissing FROM pg_attribute WHERE attrelid = 'responses'::regclass "
                "AND attname IN ('prompt_tokens', 'eval_tokens', 'eval_ms', 'load_ms', 'wasted_tokens')")).all())
            assert missing == dict.fromkeys(("prompt_tokens", "eval_tokens", "eval_ms", "load_ms", "wasted_tokens"),
                                            True)
            assert queries.lookup(connection, "00000000000f4242")["result"]["usage"]["eval_tokens"] == 0  # bulk row
            spent = Usage(prompt_tokens=30, eval_tokens=70, eval_ms=500.0, load_ms=2.0, wasted_tokens=40,
                          first_model="small")
            queries.save_completed(connection, [StoredAnswer(
                question_id=qid(3), question_text="question 3", original_answer="ref", accepted_at=NOW, epoch=1,
                answer="again", score=0.6, first_score=0.2, processing_attempts=2, error_retries=0,
                total_processing_time_ms=5.0, llm_time_ms=1.0, low_quality=False, model="large", at=NOW + 1,
                usage=spent)])
            assert queries.lookup(connection, qid(3))["result"]["usage"] == spent.as_dict()
            assert totals.read(connection)["tokens"]["wasted_tokens"] == 40
        with engine.begin() as connection:
            cfg = alembic_config()
            cfg.attributes["connection"] = connection
            command.downgrade(cfg, "0006")
        assert "first_model" not in {c["name"] for c in inspect(engine).get_columns("responses")}
    finally:
        engine.dispose()
