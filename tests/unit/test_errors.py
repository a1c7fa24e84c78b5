"""qastream.errors: status code -> error class, Retry-After parsing, and the one exception hierarchy."""

import json

import pytest

from qastream.errors import (
    MID_STREAM,
    NO_RESPONSE,
    ErrorClass,
    LLMPermanentError,
    LLMRetryableError,
    PermanentError,
    QAStreamError,
    RequestError,
    RetryableError,
    classify,
    llm_call_error,
    parse_retry_after,
)


@pytest.mark.parametrize("status, error_class", [
    (NO_RESPONSE, ErrorClass.OVERLOAD),
    (0, ErrorClass.OVERLOAD),
    (MID_STREAM, ErrorClass.OVERLOAD),
    (-1, ErrorClass.OVERLOAD),
    (500, ErrorClass.OVERLOAD),
    (502, ErrorClass.OVERLOAD),
    (503, ErrorClass.OVERLOAD),
    (504, ErrorClass.OVERLOAD),
    (599, ErrorClass.OVERLOAD),
    (429, ErrorClass.QUOTA),
    (400, ErrorClass.PERMANENT),
    (401, ErrorClass.PERMANENT),
    (403, ErrorClass.PERMANENT),
    (404, ErrorClass.PERMANENT),
    (413, ErrorClass.PERMANENT),
    (499, ErrorClass.PERMANENT),
    (600, ErrorClass.PERMANENT),
    (200, ErrorClass.PERMANENT),
    (-2, ErrorClass.PERMANENT),
])
def test_classify(status, error_class):
    assert classify(status) == error_class


@pytest.mark.parametrize("header, seconds", [
    (None, None),
    ("7", 7.0),
    (" 7 ", 7.0),
    ("0", 0.0),
    ("1.5", 1.5),
    ("120", 120.0),
    ("-1", None),
    ("", None),
    ("soon", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", None),   # HTTP-date form is treated as absent
    ("nan", None),
])
def test_parse_retry_after(header, seconds):
    assert parse_retry_after(header) == seconds


def test_parse_retry_after_rejects_infinity():
    assert parse_retry_after("inf") is None


def test_llm_call_error_carries_its_classification():
    err = llm_call_error(ErrorClass.QUOTA, 429, "slow down", retry_after=7.0)
    assert isinstance(err, QAStreamError)
    assert (err.error_class, err.status_code, err.message, err.retry_after) == (ErrorClass.QUOTA, 429, "slow down", 7.0)
    assert str(err) == "quota (429): slow down"


def test_request_error_carries_status_and_message():
    err = RequestError(415, "bad type")
    assert isinstance(err, QAStreamError)
    assert (err.status, err.message, str(err)) == (415, "bad type", "bad type")


@pytest.mark.parametrize("status_code, outage", [
    (0, True), (-1, True), (500, True), (502, True), (504, True),
    (503, False),  # busy: a live server shedding load, handled by each question's back-off
    (429, False), (404, False), (400, False),
])
def test_signals_outage(status_code, outage):
    from qastream.errors import signals_outage

    assert signals_outage(status_code) is outage


@pytest.mark.parametrize("error_class, kind", [
    (ErrorClass.OVERLOAD, LLMRetryableError), (ErrorClass.QUOTA, LLMRetryableError),
    (ErrorClass.PERMANENT, LLMPermanentError),
])
def test_an_llm_failure_is_retryable_unless_its_class_is_permanent(error_class, kind):
    assert type(llm_call_error(error_class, 500, "x")) is kind


def test_an_error_raised_without_a_message_says_what_its_docstring_says():
    assert str(RetryableError()) == RetryableError.__doc__.strip().splitlines()[0]
    assert str(PermanentError("the detail")) == "the detail"


def qastream_modules():
    """Every module of the qastream package, except Alembic's migration scripts (they run inside Alembic)."""
    import pkgutil

    import qastream

    for info in pkgutil.walk_packages(qastream.__path__, "qastream."):
        if not info.name.startswith("qastream.db.migrations") and info.name != "qastream.__main__":
            yield info.name


def test_every_qastream_exception_is_either_retryable_or_permanent():
    import importlib
    import inspect

    classes = {cls for name in qastream_modules()
               for _, cls in inspect.getmembers(importlib.import_module(name), inspect.isclass)
               if issubclass(cls, BaseException) and cls.__module__.startswith("qastream.")}
    assert len(classes) >= 12  # the walk found the modules, not just this file's imports
    branches = (RetryableError, PermanentError)
    wrong = sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in classes - {QAStreamError, *branches}
                   if not issubclass(cls, QAStreamError) or sum(issubclass(cls, b) for b in branches) != 1)
    assert not wrong, f"not under exactly one of RetryableError / PermanentError: {wrong}"


@pytest.mark.parametrize("error_class", list(ErrorClass))
def test_error_classes_are_their_strings(error_class):
    assert error_class == error_class.value and f"{error_class}" == error_class.value
    assert ErrorClass(error_class.value) is error_class
    assert json.dumps({"error_class": error_class}) == f'{{"error_class": "{error_class.value}"}}'


@pytest.mark.parametrize("status", [NO_RESPONSE, MID_STREAM, 200, 400, 429, 500, 503])
def test_classify_returns_a_member(status):
    assert type(classify(status)) is ErrorClass
