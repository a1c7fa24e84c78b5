"""The Alembic migrations on SQLite: 0002-0007 upgrade a populated older database, and the model agrees with them."""

from dataclasses import replace

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text

from qastream.db import batches, inflight, keys, owners, queries, recent, totals, webhooks
from qastream.db.inflight import OVER_LIMIT
from qastream.db.migrate import alembic_config, upgrade
from qastream.db.queries import Failure, Q, R, StoredAnswer, Submission
from qastream.db.schema import Base
from qastream.db.totals import S
from qastream.policy.access import Limits, Scope
from qastream.policy.keys import hash_key, new_key
from qastream.policy.lifecycle import State
from qastream.policy.usage import Usage
from qastream.policy.webhooks import DeliveryState, EventKind
from qastream.services.storage import make_engine

NOW = 1_700_000_000.0
NEW_INDEXES = {
    "questions": {"ix_questions_status_accepted_at": ["status", "accepted_at"],
                  "ix_questions_status_updated_at": ["status", "updated_at"],
                  "ix_questions_accepted_at": ["accepted_at"]},
    "responses": {"ix_responses_updated_at_question_id": ["updated_at", "question_id"],
                  "ix_responses_created_at": ["created_at"],
                  "ix_responses_total_processing_time_ms": ["total_processing_time_ms"]},
}


def qid(n):
    return f"{n:016x}"


def answer(n, at):
    return StoredAnswer(question_id=qid(n), question_text=f"question {n}", original_answer="ref", accepted_at=at - 2,
                        epoch=1, answer=f"answer {n}", score=0.5, first_score=0.5, processing_attempts=1,
                        error_retries=0, total_processing_time_ms=float(n), llm_time_ms=1.0, low_quality=False,
                        model="m", at=at)


def populate_at(engine, n=300, revision="0001"):
    """Write at head with the stage code, then downgrade to ``revision`` (the stage code writes the stats table)."""
    upgrade(engine)
    with engine.begin() as connection:
        populate(connection, n)
    with engine.begin() as connection:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)


def populate(connection, n=300):
    """n questions: a third completed, one failed, the rest pending; written by the stage code itself."""
    queries.accept(connection, [Submission(qid(i), f"question {i}", None, NOW - 1000 + i) for i in range(n)])
    queries.save_completed(connection, [answer(i, NOW - 500 + i) for i in range(0, n, 3)])
    queries.save_failed(connection, [Failure(qid(1), "question 1", None, NOW - 999, 1, "permanent", "404", NOW - 10)])


#: Columns added after 0004, absent from the older databases these tests snapshot.
LATER_COLUMNS = {"webhook_url", "prompt_tokens", "eval_tokens", "eval_ms", "load_ms", "wasted_tokens", "first_model"}


def snapshot(connection):
    older = [c for c in Q.c if c.name not in LATER_COLUMNS]
    older_answers = [c for c in R.c if c.name not in LATER_COLUMNS]
    return (connection.execute(select(*older).order_by(Q.c.question_id)).all(),
            connection.execute(select(*older_answers).order_by(R.c.question_id)).all())


def plan(connection, statement) -> str:
    compiled = statement.compile(connection, compile_kwargs={"literal_binds": True})
    return "\n".join(row[-1] for row in connection.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))


class Recorder:
    """A stand-in connection that keeps the first statement a query function runs, then stops it."""

    dialect = type("Dialect", (), {"name": "sqlite"})()

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


def main_queries():
    """The request and timer queries whose plans must use an index, as the code builds them."""
    return {"latest": statement_of(lambda c: recent.latest_answers(c, 20)),
            "pending": statement_of(lambda c: queries.pending_before(c, NOW, 1000)),
            "failed": statement_of(lambda c: queries.failed(c, 100))}


@pytest.fixture
def engine_at_0001(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/old.db")
    upgrade(engine, "0001")
    yield engine
    engine.dispose()


def test_0002_upgrades_a_populated_0001_database_in_place(engine_at_0001):
    populate_at(engine_at_0001)
    with engine_at_0001.begin() as connection:
        before = snapshot(connection)
    upgrade(engine_at_0001)
    with engine_at_0001.begin() as connection:
        assert snapshot(connection) == before
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0007"
    inspector = inspect(engine_at_0001)
    for table, wanted in NEW_INDEXES.items():
        found = {i["name"]: i["column_names"] for i in inspector.get_indexes(table)}
        assert found == wanted  # ix_questions_status is gone: the (status, accepted_at) prefix serves it
    with engine_at_0001.begin() as connection:
        assert [a["question_id"] for a in recent.latest_answers(connection, 3)] == [qid(297), qid(294), qid(291)]
        assert queries.pending_before(connection, NOW - 995, 2) == [qid(2), qid(4)]  # 0 completed, 1 failed


def test_main_queries_use_an_index_and_never_sort_the_table(engine_at_0001):
    populate_at(engine_at_0001)
    upgrade(engine_at_0001)
    statements = main_queries()
    with engine_at_0001.begin() as connection:
        for name, index in (("latest", "ix_responses_updated_at_question_id"),
                            ("pending", "ix_questions_status_accepted_at"),
                            ("failed", "ix_questions_status_updated_at")):
            text_plan = plan(connection, statements[name])
            assert f"USING INDEX {index}" in text_plan or f"USING COVERING INDEX {index}" in text_plan, text_plan
            assert "TEMP B-TREE" not in text_plan, text_plan


def test_pending_query_reads_only_pending_rows(engine_at_0001):
    upgrade(engine_at_0001)
    with engine_at_0001.begin() as connection:
        text_plan = plan(connection, select(Q.c.question_id).where(Q.c.status == State.PENDING)
                         .order_by(Q.c.accepted_at).limit(5))
    assert "SEARCH questions USING" in text_plan and "(status=?)" in text_plan, text_plan


def test_the_model_and_the_migrations_agree(engine):
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_0003_fills_the_running_totals_the_writes_keep(engine_at_0001):
    upgrade(engine_at_0001)
    with engine_at_0001.begin() as connection:
        populate(connection)
        kept = totals.read(connection)
        minutes = connection.execute(select(S).where(S.c.name.in_(["accepted", "completed", "failed"]))).all()
    populate_at(engine_at_0001, 0)  # back to 0001 with the rows written above
    upgrade(engine_at_0001)
    with engine_at_0001.begin() as connection:
        assert totals.read(connection) == kept
        assert kept["questions_by_status"] == {State.PENDING: 199, State.COMPLETED: 100, State.FAILED: 1}
        # The rows are from 2023: older than the minutes kept, so the upgrade counts none of them.
        assert minutes and connection.execute(select(S).where(S.c.name == "accepted")).all() == []


def test_0004_adds_empty_key_tables_to_a_populated_0003_database_and_keys_work_on_old_questions(engine_at_0001):
    populate_at(engine_at_0001, revision="0003")
    assert "api_keys" not in inspect(engine_at_0001).get_table_names()
    with engine_at_0001.begin() as connection:
        before, kept = snapshot(connection), totals.read(connection)
    upgrade(engine_at_0001)
    with engine_at_0001.begin() as connection:
        assert snapshot(connection) == before and totals.read(connection) == kept
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0007"
        assert connection.execute(text("SELECT count(*) FROM api_keys")).scalar_one() == 0
        assert connection.execute(text("SELECT count(*) FROM question_owners")).scalar_one() == 0
        key = new_key()
        keys.create(connection, "ci", hash_key(key), frozenset({Scope.SUBMIT}), Limits(max_in_flight=1), NOW)
        principal = keys.lookup(connection, hash_key(key)).principal
        # qid(0) was answered before the upgrade, qid(2) is still pending: asked now, the key owns both.
        outcomes = inflight.accept(connection, [Submission(qid(i), f"question {i}", None, NOW, principal)
                                                for i in (0, 2, 4)])
        assert [o.kind for o in outcomes] == [queries.FOUND, queries.IN_FLIGHT, OVER_LIMIT]
        assert owners.owns(connection, principal.key_id, qid(0)) and owners.owns(connection, principal.key_id, qid(2))
    indexes = {i["name"]: i["column_names"] for i in inspect(engine_at_0001).get_indexes("question_owners")}
    assert indexes == {"ix_question_owners_open_key_id": ["key_id"],
                       "ix_question_owners_open_question_id": ["question_id"]}


def test_0005_adds_empty_batch_tables_to_a_populated_0004_database_and_batches_work_on_old_questions(engine_at_0001):
    populate_at(engine_at_0001, revision="0004")
    assert "batches" not in inspect(engine_at_0001).get_table_names()
    with engine_at_0001.begin() as connection:
        before, kept = snapshot(connection), totals.read(connection)
    upgrade(engine_at_0001)
    with engine_at_0001.begin() as connection:
        assert snapshot(connection) == before
        assert {k: v for k, v in totals.read(connection).items() if k != "batches_by_status"} == \
            {k: v for k, v in kept.items() if k != "batches_by_status"}
        assert connection.execute(text("SELECT count(*) FROM batches")).scalar_one() == 0
        assert connection.execute(text("SELECT count(*) FROM batch_items")).scalar_one() == 0
        # qid(0) was answered before the upgrade, qid(2) is pending, qid(1) failed: a batch asks all three.
        batches.create_within(connection, batches.NewBatch("batch_old", 3, NOW, {"team": "a"}, None, None), 3, None)
        items = [batches.Item(line, None, Submission(qid(i), f"question {i}", None, NOW))
                 for line, i in enumerate((0, 2, 1), start=1)]
        outcomes = batches.accept_items(connection, "batch_old", items)
        assert [o.kind for o in outcomes] == [queries.FOUND, queries.IN_FLIGHT, queries.RESUBMITTED]
        batch = batches.get(connection, "batch_old")
        assert batches.counts(connection, batch).as_json() == {
            "total": 3, "completed": 1, "low_quality": 0, "failed": 0, "cancelled": 0}
        assert totals.read(connection)["batches_by_status"] == {"in_progress": 1}
    indexes = {i["name"]: i["column_names"] for i in inspect(engine_at_0001).get_indexes("batches")}
    assert indexes == {"ix_batches_created_at_batch_id": ["created_at", "batch_id"],
                       "ix_batches_owner_key_id_created_at": ["owner_key_id", "created_at", "batch_id"],
                       "ix_batches_status_notified_at": ["status", "notified_at"]}
    assert {i["name"]: i["column_names"] for i in inspect(engine_at_0001).get_indexes("batch_items")} == {
        "ix_batch_items_question_id": ["question_id"]}


def test_batch_queries_use_an_index_and_never_sort_the_table(engine_at_0001):
    populate_at(engine_at_0001)
    upgrade(engine_at_0001)
    statements = {
        "latest": statement_of(lambda c: batches.latest(c, 10)),
        "latest of a key": statement_of(lambda c: batches.latest(c, 10, owner=1)),
        "unfinished": statement_of(lambda c: batches.unfinished(c, 100)),
        "unnotified": statement_of(lambda c: batches.unnotified(c, 100)),
        "counts": statement_of(lambda c: batches.counts(c, batches.Batch("b", "in_progress", 1, NOW, NOW, None, None,
                                                                           None, None, None, None))),
        "results": statement_of(lambda c: batches.results(c, "b", 0, 500)),
    }
    with engine_at_0001.begin() as connection:
        for name, statement in statements.items():
            text_plan = plan(connection, statement)
            assert all("USING" in line for line in text_plan.splitlines() if "SCAN" in line), (name, text_plan)
            assert "TEMP B-TREE" not in text_plan, (name, text_plan)



def test_0006_adds_webhooks_to_a_populated_0004_database_and_downgrades_back(engine_at_0001):
    populate_at(engine_at_0001, revision="0004")
    assert "webhook_deliveries" not in inspect(engine_at_0001).get_table_names()
    with engine_at_0001.begin() as connection:
        before, kept = snapshot(connection), totals.read(connection)
    upgrade(engine_at_0001)
    with engine_at_0001.begin() as connection:
        assert snapshot(connection) == before and totals.read(connection) == kept
        assert connection.execute(text("SELECT count(*) FROM questions WHERE webhook_url IS NOT NULL")).scalar_one() == 0
        assert connection.execute(text("SELECT count(*) FROM webhook_deliveries")).scalar_one() == 0
        # An old pending question asked again with a webhook takes the URL; the deliveries table works.
        queries.accept(connection, [Submission(qid(2), "question 2", None, NOW, webhook_url="https://hooks.example/a")])
        assert webhooks.targets(connection, [qid(0), qid(2)]) == {qid(2): "https://hooks.example/a"}
        [(delivery, created)] = webhooks.insert(connection, [webhooks.NewDelivery(
            "d" * 32, EventKind.QUESTION_COMPLETED, qid(2), "https://hooks.example/a", "{}", NOW)])
        assert created and delivery.state == DeliveryState.PENDING and delivery.attempts == 0
    indexes = {i["name"]: i["column_names"] for i in inspect(engine_at_0001).get_indexes("webhook_deliveries")}
    assert indexes == {"ix_webhook_deliveries_subject_id": ["subject_id"],
                       "ix_webhook_deliveries_state_updated_at": ["state", "updated_at"]}
    with engine_at_0001.begin() as connection:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, "0004")
    assert "webhook_deliveries" not in inspect(engine_at_0001).get_table_names()
    assert "webhook_url" not in {c["name"] for c in inspect(engine_at_0001).get_columns("questions")}
    with engine_at_0001.begin() as connection:
        assert snapshot(connection)[1] == before[1]  # the answers survive the way down


def test_0007_adds_token_columns_to_a_populated_0006_database_and_downgrades_back(engine_at_0001):
    populate_at(engine_at_0001, revision="0006")
    assert "prompt_tokens" not in {c["name"] for c in inspect(engine_at_0001).get_columns("responses")}
    with engine_at_0001.begin() as connection:
        before, kept = snapshot(connection), totals.read(connection)
    upgrade(engine_at_0001)
    with engine_at_0001.begin() as connection:
        assert snapshot(connection) == before and totals.read(connection) == kept
        # The old answers read as "nothing counted", and a new answer carries its usage.
        old = connection.execute(select(R.c.prompt_tokens, R.c.eval_tokens, R.c.eval_ms, R.c.load_ms,
                                        R.c.wasted_tokens, R.c.first_model).distinct()).all()
        assert old == [(0, 0, 0.0, 0.0, 0, None)]
        assert queries.lookup(connection, qid(0))["result"]["usage"]["eval_tokens"] == 0
        spent = Usage(prompt_tokens=30, eval_tokens=70, eval_ms=500.0, load_ms=2.0, wasted_tokens=40,
                      first_model="small")
        queries.save_completed(connection, [replace(answer(2, NOW), usage=spent)])
        assert queries.lookup(connection, qid(2))["result"]["usage"] == spent.as_dict()
        assert totals.read(connection)["tokens"]["eval_tokens"] == 70
    with engine_at_0001.begin() as connection:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, "0006")
    assert "first_model" not in {c["name"] for c in inspect(engine_at_0001).get_columns("responses")}
    with engine_at_0001.begin() as connection:
        assert len(snapshot(connection)[1]) == len(before[1]) + 1  # the answers survive the way down
