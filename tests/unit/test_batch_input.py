"""qastream.web.batch_input: a batch body's lines checked as POST /query checks a body, with their line numbers."""

import json

import pytest

from qastream.errors import RequestError
from qastream.web.batch_input import (
    MAX_LISTED_ERRORS,
    LineError,
    check_metadata,
    check_webhook_url,
    parse_batch,
    refusal_body,
)

MAX_CHARS = 100


def ndjson(*lines: str) -> bytes:
    return "\n".join(lines).encode("utf-8")


def q(text, **more):
    return json.dumps({"question_text": text, **more})


def test_json_lines_are_numbered_in_array_order_with_their_custom_ids():
    body = json.dumps({"questions": [{"question_text": "What is a compiler?", "custom_id": "a"},
                                     {"question_text": "  What is RAM? ", "original_answer": " Memory. ",
                                      "custom_id": 7}],
                       "webhook_url": "https://example.org/hook", "metadata": {"team": "x"}}).encode()
    checked = parse_batch(body, False, MAX_CHARS, 10)
    assert [(line.line, line.custom_id, line.query.question_text, line.query.original_answer)
            for line in checked.lines] == [(1, "a", "What is a compiler?", None), (2, "7", "What is RAM?", "Memory.")]
    assert checked.errors == [] and checked.webhook_url == "https://example.org/hook"
    assert checked.metadata == {"team": "x"}


def test_ndjson_lines_keep_their_line_in_the_file_blank_lines_counted():
    checked = parse_batch(ndjson(q("one?"), "", q("two?", custom_id="b"), "   "), True, MAX_CHARS, 10,
                          webhook_url="http://127.0.0.1:9/h")
    assert [(line.line, line.custom_id) for line in checked.lines] == [(1, None), (3, "b")]
    assert checked.webhook_url == "http://127.0.0.1:9/h"


@pytest.mark.parametrize("line, reason", [
    ("{not json", "line is not valid JSON"),
    ("[1, 2]", "body must be a JSON object"),
    (json.dumps({"original_answer": "x"}), "question_text is required"),
    (json.dumps({"question_text": 5}), "question_text must be a string"),
    (json.dumps({"question_text": "   "}), "question_text must not be empty"),
    (json.dumps({"question_text": "x" * (MAX_CHARS + 1)}), f"longer than {MAX_CHARS}"),
    (json.dumps({"question_text": "nul\u0000"}), "NUL"),
    ('{"question_text": "\\ud800"}', "lone surrogate"),
    (json.dumps({"question_text": "ok?", "original_answer": 3}), "original_answer must be a string"),
    (json.dumps({"question_text": "ok?", "custom_id": ["a"]}), "custom_id must be a string"),
    (json.dumps({"question_text": "ok?", "custom_id": "x" * 257}), "custom_id is longer"),
    (json.dumps({"question_text": "ok?", "custom_id": True}), "custom_id must be a string"),
    ("[" * 100_000, "nested too deeply"),
])
def test_a_bad_line_is_named_with_its_number_and_the_post_query_reason(line, reason):
    checked = parse_batch(ndjson(q("fine?"), line, q("also fine?")), True, MAX_CHARS, 10)
    assert [line.line for line in checked.lines] == [1, 3]
    [error] = checked.errors
    assert error.line == 2 and reason in error.error


@pytest.mark.parametrize("body, ndjson_body, status, reason", [
    (b"[]", False, 400, "JSON object with a questions array"),
    (b'{"questions": {}}', False, 400, "questions must be an array"),
    (b'{"questions": []}', False, 400, "no questions"),
    (b"\n\n", True, 400, "no questions"),
    (b"\xff", True, 400, "not UTF-8"),
    (b"{", False, 400, "not valid JSON"),
    (json.dumps({"questions": [{"question_text": "q"}] * 11}).encode(), False, 413, "over the limit of 10"),
    (json.dumps({"questions": [{"question_text": "q"}], "metadata": [1]}).encode(), False, 400, "metadata must be"),
    (json.dumps({"questions": [{"question_text": "q"}], "webhook_url": "ftp://x"}).encode(), False, 400, "http://"),
])
def test_a_body_that_is_not_a_batch_is_refused_whole(body, ndjson_body, status, reason):
    with pytest.raises(RequestError) as refused:
        parse_batch(body, ndjson_body, MAX_CHARS, 10)
    assert refused.value.status == status and reason in refused.value.message


@pytest.mark.parametrize("url, ok", [
    (None, True), ("", True), ("http://127.0.0.1:8080/hook", True), ("https://example.org/a?b=c", True),
    ("ftp://example.org/", False), ("https://", False), ("not a url", False), ("http://host:port/", False),
    (42, False), ("https://example.org/" + "a" * 3000, False), ("http://exa\u0000mple.org/", False),
])
def test_webhook_url_syntax(url, ok):
    if ok:
        assert check_webhook_url(url) == (url or None)
    else:
        with pytest.raises(RequestError):
            check_webhook_url(url)


def test_metadata_is_a_small_object():
    assert check_metadata(None) is None and check_metadata({"a": 1}) == {"a": 1}
    with pytest.raises(RequestError):
        check_metadata({"a": "x" * 9000})


def test_the_refusal_lists_the_first_bad_lines_and_counts_all():
    errors = [LineError(n, "bad") for n in range(1, MAX_LISTED_ERRORS + 50)]
    body = refusal_body(errors)
    assert body["invalid_count"] == len(errors) and len(body["invalid_lines"]) == MAX_LISTED_ERRORS
    assert body["invalid_lines"][0] == {"line": 1, "error": "bad"} and "skip_invalid=true" in body["error"]
