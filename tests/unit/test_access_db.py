"""qastream.db.keys, owners, inflight on SQLite: keys by hash only, ownership, the in-flight bound inside acceptance."""

import pytest
from sqlalchemy import select, text

from qastream.db import inflight, keys, owners, queries, recent
from qastream.db.inflight import OVER_LIMIT
from qastream.db.owners import OWN
from qastream.db.queries import CREATED, FOUND, IN_FLIGHT, RESUBMITTED, Failure, StoredAnswer, Submission
from qastream.policy.access import Limits, Principal, Scope, parse_scopes
from qastream.policy.keys import hash_key, new_key

NOW = 1_700_000_000.0


def qid(n):
    return f"{n:016x}"


def add_key(connection, name, scopes="submit,read", limits=None):
    key = new_key()
    keys.create(connection, name, hash_key(key), parse_scopes(scopes), limits or Limits(), NOW)
    return keys.lookup(connection, hash_key(key)).principal


def submit(connection, owner, *numbers, at=NOW):
    return inflight.accept(connection, [Submission(qid(n), f"question {n}", None, at, owner) for n in numbers])


def answer(n, at=NOW + 10):
    return StoredAnswer(question_id=qid(n), question_text=f"question {n}", original_answer=None, accepted_at=NOW,
                        epoch=1, answer="a", score=0.5, first_score=0.5, processing_attempts=1, error_retries=0,
                        total_processing_time_ms=1.0, llm_time_ms=1.0, low_quality=False, model="m", at=at)


def open_count(connection, principal):
    return owners.open_counts(connection, [principal.key_id])[principal.key_id]


def test_a_key_is_stored_as_its_hash_and_found_by_it(engine):
    key = new_key()
    with engine.begin() as c:
        keys.create(c, "ci", hash_key(key), frozenset({Scope.READ, Scope.SUBMIT}), Limits(5.0, 10, 3), NOW)
        found = keys.lookup(c, hash_key(key))
        assert keys.lookup(c, hash_key(new_key())) is None
        dump = "\n".join(c.connection.driver_connection.iterdump())
    assert found == keys.Lookup(Principal(found.principal.key_id, "ci", frozenset({Scope.SUBMIT, Scope.READ}),
                                          Limits(5.0, 10, 3), bucket=hash_key(key)[:32]), revoked=False)
    assert key not in dump and key[len("qsk_"):] not in dump and hash_key(key) in dump


def test_names_are_unique_even_after_revocation(engine):
    with engine.begin() as c:
        add_key(c, "ci")
        assert keys.revoke(c, "ci", NOW + 1) == NOW + 1
        with pytest.raises(keys.KeyExists, match="'ci' exists"):
            add_key(c, "ci")


def test_revoke_is_recorded_once_and_unknown_names_say_so(engine):
    key = new_key()
    with engine.begin() as c:
        keys.create(c, "ci", hash_key(key), frozenset({Scope.READ}), Limits(), NOW)
        assert keys.revoke(c, "nobody", NOW) is None
        assert keys.revoke(c, "ci", NOW + 5) == NOW + 5
        assert keys.revoke(c, "ci", NOW + 9) == NOW + 5  # the first revocation stands
        assert keys.lookup(c, hash_key(key)).revoked is True


def test_listing_shows_everything_but_the_hash(engine):
    with engine.begin() as c:
        add_key(c, "a", "admin")
        add_key(c, "b", "read,submit", Limits(1.5, 2, None))
        listed = keys.listing(c)
    assert [(k.name, k.scopes, k.limits) for k in listed] == [("a", "admin", Limits()),
                                                              ("b", "submit,read", Limits(1.5, 2, None))]
    assert all(k.created_at == NOW and k.last_used_at is None and k.revoked_at is None for k in listed)
    assert not any(hasattr(k, "key_hash") for k in listed)


def test_touch_moves_last_used_at_most_once_a_minute(engine):
    with engine.begin() as c:
        principal = add_key(c, "ci")
        for at in (NOW, NOW + 30, NOW + 59):
            keys.touch(c, principal.key_id, at)
        assert keys.listing(c)[0].last_used_at == NOW
        keys.touch(c, principal.key_id, NOW + 61)
        assert keys.listing(c)[0].last_used_at == NOW + 61


def test_acceptance_records_owners_and_a_question_of_two_keys_belongs_to_both(engine):
    with engine.begin() as c:
        a, b = add_key(c, "a"), add_key(c, "b")
        assert [o.kind for o in submit(c, a, 1, 2)] == [CREATED, CREATED]
        assert [o.kind for o in submit(c, b, 2)] == [IN_FLIGHT]
        assert submit(c, None, 3)[0].kind == CREATED  # without access control: no owner
        assert (owners.owns(c, a.key_id, qid(1)), owners.owns(c, a.key_id, qid(2))) == (True, True)
        assert (owners.owns(c, b.key_id, qid(1)), owners.owns(c, b.key_id, qid(2))) == (False, True)
        assert not owners.owns(c, a.key_id, qid(3))
        assert (open_count(c, a), open_count(c, b)) == (2, 1)


def test_the_bound_refuses_past_max_in_flight_and_frees_a_slot_when_a_question_ends(engine):
    with engine.begin() as c:
        bounded = add_key(c, "bounded", limits=Limits(max_in_flight=2))
        free = add_key(c, "free")
        outcomes = submit(c, bounded, 1, 2, 3, 1)  # in one batch: the third is refused, asking 1 again is not
        assert [o.kind for o in outcomes] == [CREATED, CREATED, OVER_LIMIT, IN_FLIGHT]
        assert c.execute(select(queries.Q.c.question_id).where(queries.Q.c.question_id == qid(3))).first() is None
        assert submit(c, free, 3, 4)[0].kind == CREATED  # another key is not bound by it
        assert submit(c, bounded, 4)[0].kind == OVER_LIMIT  # nor does someone else's question slip in
        queries.save_completed(c, [answer(1)])
        assert open_count(c, bounded) == 1
        assert submit(c, bounded, 4)[0].kind == IN_FLIGHT
        queries.save_failed(c, [Failure(qid(2), "question 2", None, NOW, 1, "permanent", "no", NOW + 20)])
        assert open_count(c, bounded) == 1 and open_count(c, free) == 2


def test_answered_questions_do_not_count_and_a_failed_one_asked_again_does(engine):
    with engine.begin() as c:
        bounded = add_key(c, "bounded", limits=Limits(max_in_flight=1))
        submit(c, None, 1, 2)
        queries.save_completed(c, [answer(1)])
        queries.save_failed(c, [Failure(qid(2), "question 2", None, NOW, 1, "permanent", "no", NOW + 20)])
        assert [o.kind for o in submit(c, bounded, 1, 1)] == [FOUND, FOUND]
        assert owners.owns(c, bounded.key_id, qid(1)) and open_count(c, bounded) == 0
        assert submit(c, bounded, 2)[0].kind == RESUBMITTED
        assert open_count(c, bounded) == 1
        assert submit(c, bounded, 1)[0].kind == FOUND  # still answered at the bound
        assert submit(c, bounded, 3)[0].kind == OVER_LIMIT


def test_latest_answers_of_a_key_are_its_own(engine):
    with engine.begin() as c:
        a, b = add_key(c, "a"), add_key(c, "b")
        submit(c, a, 1, 2)
        submit(c, b, 2, 3)
        queries.save_completed(c, [answer(1, NOW + 1), answer(2, NOW + 2), answer(3, NOW + 3)])
        assert [x["question_id"] for x in recent.latest_answers(c, 10)] == [qid(3), qid(2), qid(1)]
        assert [x["question_id"] for x in recent.latest_answers(c, 10, a.key_id)] == [qid(2), qid(1)]
        assert [x["question_id"] for x in recent.latest_answers(c, 10, b.key_id)] == [qid(3), qid(2)]
        assert recent.latest_answers(c, 10, a.key_id + b.key_id) == []


def test_counting_a_keys_open_questions_reads_the_partial_index(engine):
    with engine.begin() as c:
        statement = select(OWN.c.key_id).where(OWN.c.key_id == 1, OWN.c.open)
        compiled = statement.compile(c, compile_kwargs={"literal_binds": True})
        plan = " ".join(r[-1] for r in c.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))
        assert "ix_question_owners_open_key_id" in plan, plan
        compiled = select(OWN.c.key_id).where(OWN.c.question_id == "x", OWN.c.open).compile(
            c, compile_kwargs={"literal_binds": True})
        plan = " ".join(r[-1] for r in c.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))
        assert "ix_question_owners_open_question_id" in plan, plan


def test_a_cache_answer_makes_the_key_an_owner_without_counting(engine):
    with engine.begin() as c:
        a, b = add_key(c, "a"), add_key(c, "b", limits=Limits(max_in_flight=1))
        submit(c, a, 1, 2)
        queries.save_completed(c, [answer(1)])
        owners.record_answered(c, b.key_id, qid(1), queries.to_datetime(NOW))
        owners.record_answered(c, b.key_id, qid(1), queries.to_datetime(NOW))  # twice is harmless
        owners.record_answered(c, b.key_id, qid(9), queries.to_datetime(NOW))  # a question this database lacks
        owners.record_answered(c, a.key_id, qid(2), queries.to_datetime(NOW))  # an open row stays open
        assert owners.owns(c, b.key_id, qid(1)) and not owners.owns(c, b.key_id, qid(9))
        assert open_count(c, b) == 0 and open_count(c, a) == 1
