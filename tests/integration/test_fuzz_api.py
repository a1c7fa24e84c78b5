"""Schemathesis against a running worker: every operation of /openapi.json, valid and invalid inputs.

Each response must be below 500, have a status and a body the document
declares, and the worker must still be ready afterwards.  Examples are
derandomised so a finding reproduces, and bounded so the whole run stays
well under two minutes.  Each finding is also kept as a unit test (see
tests/unit/test_requests.py and tests/unit/test_web_api.py).
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from stackutil import Worker

#: Examples per operation and generation mode.  Schemathesis stops early for operations with few
#: distinct inputs: about 400 requests in all, some 20 s with the worker's start.
EXAMPLES = 40
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def fuzz(worker: Worker, operation, mode: GenerationMode) -> int:
    """Send up to ``EXAMPLES`` generated requests of ``mode`` to ``operation``; raise on a finding.

    Returns how many requests were sent.
    """
    sent = 0

    @hypothesis_settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                         phases=[Phase.explicit, Phase.generate, Phase.shrink],
                         suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        nonlocal sent
        sent += 1
        response = case.call(base_url=worker.url, timeout=30)
        case.validate_response(response, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid in an operation without parameters or body
        if mode is GenerationMode.POSITIVE:
            raise
    return sent


def test_every_operation_survives_the_fuzzer(stack_env, start_worker_process, tmp_path):
    worker = start_worker_process(stack_env, database_url=f"sqlite:///{tmp_path}/fuzz.db")
    schema = schemathesis.openapi.from_url(worker.url + "/openapi.json")
    findings = []
    operations = requests = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                requests += fuzz(worker, operation, mode)
            except (Exception, BaseExceptionGroup) as exc:  # every operation's finding, not only the first
                findings.append(f"{operation.label} [{mode.value}]: {exc}")
    print(f"fuzzed {operations} operations with {requests} requests")
    assert operations >= 15 and requests >= operations * 5
    assert not findings, "\n\n".join(findings)
    code, body = worker.request("GET", "/health")
    assert code == 200 and body["ready"], body
    question = "Is the worker still answering after the fuzzer?"
    assert worker.query(question, question)[0] in (200, 202)
