"""qastream.policy.ids: the question id is the key of everything, so its shape and stability are pinned here."""

import pytest

from qastream.policy.ids import ID_LENGTH, is_question_id, normalise, question_id

#: sha256("What is Kafka?")[:16], computed once outside qastream.
KAFKA_ID = "9b6c9181605e0b26"


@pytest.mark.parametrize("raw, expected", [
    ("What is Kafka?", "What is Kafka?"),
    ("  What is Kafka?  ", "What is Kafka?"),
    ("What   is\tKafka?", "What is Kafka?"),
    ("What\nis\r\nKafka?", "What is Kafka?"),
    ("What\u00a0is Kafka?", "What is Kafka?"),  # non-breaking space is whitespace too
    ("", ""),
    (" \t\n ", ""),
    ("Kafka", "Kafka"),
])
def test_normalise(raw, expected):
    assert normalise(raw) == expected


def test_normalise_keeps_case_and_punctuation():
    assert normalise("What IS kafka ?!") == "What IS kafka ?!"


def test_question_id_is_the_first_16_hex_of_sha256():
    assert question_id("What is Kafka?") == KAFKA_ID


@pytest.mark.parametrize("variant", [
    "What is Kafka?",
    " What is Kafka? ",
    "What  is  Kafka?",
    "What\tis\nKafka?",
    "\n\nWhat is    Kafka?\t",
])
def test_whitespace_variants_share_one_id(variant):
    assert question_id(variant) == KAFKA_ID


@pytest.mark.parametrize("other", [
    "what is Kafka?",      # case matters
    "What is Kafka",       # punctuation matters
    "Whatis Kafka?",       # removing a space is not the same as collapsing spaces
])
def test_different_questions_get_different_ids(other):
    assert question_id(other) != KAFKA_ID


def test_question_id_hashes_unicode_as_utf8():
    qid = question_id("Qu'est-ce que Kafka ? — café")
    assert is_question_id(qid)
    assert qid == question_id("Qu'est-ce  que Kafka ?  —  café")


@pytest.mark.parametrize("value, expected", [
    (KAFKA_ID, True),
    ("0" * ID_LENGTH, True),
    ("0123456789abcdef", True),
    ("0123456789ABCDEF", False),   # ids are lower-case hex
    ("0123456789abcde", False),    # 15 characters
    ("0123456789abcdef0", False),  # 17 characters
    ("0123456789abcdeg", False),   # not hex
    ("", False),
    (" " + KAFKA_ID, False),
])
def test_is_question_id(value, expected):
    assert is_question_id(value) is expected


def test_is_question_id_rejects_a_trailing_newline():
    assert is_question_id(KAFKA_ID + "\n") is False


def test_generation_seed_is_stable_per_attempt_and_differs_between_attempts():
    from qastream.policy.ids import generation_seed

    assert generation_seed("0123456789abcdef", 1, 1) == generation_seed("0123456789abcdef", 1, 1)
    seeds = {generation_seed("0123456789abcdef", epoch, attempt) for epoch in (1, 2) for attempt in (1, 2, 3)}
    assert len(seeds) == 6
