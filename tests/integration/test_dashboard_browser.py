"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright.

A worker with the echo LLM serves the page; the test asks a question with the
form, waits until the page shows the answer and its score, checks that every
chart drew data, and leaves a screenshot in test-artifacts/dashboard.png.
Then it holds and fails /metrics to check the page's polling: one request in
flight, waits that double on errors and recover, nothing from a hidden tab.
A second test runs the page against a worker with QASTREAM_AUTH=required: the key form,
a key that may ask but not read /metrics, then an admin key (screenshots dashboard-*-key*.png).
A third asks a question of a slow LLM and watches the form show each stage as the worker's live
status stream (GET /status/{id}/events) announces it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from stackutil import Worker, isolated_env, launch_llm, missing, wait_until

from qastream.devtools.embedded import stop
from qastream.policy.ids import question_id
from qastream.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser download does not work here: it drives Debian's Chromium.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHARTS_WITH_POINTS = ("chart-throughput", "chart-latency", "chart-status", "chart-scores", "chart-attempts")


@pytest.fixture
def browser_page(tmp_path):
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is missing (make installs the Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1440, "height": 1100})
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
        page.on("response", lambda r: page.errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        try:
            yield page
        finally:
            context.close()


def seed(worker: Worker, token: str) -> None:
    """Two answers before the page opens: one passes, one is kept as low quality after three attempts."""
    good = f"What is the role of a scheduler in cluster {token}?"
    low = f"Which queue discipline suits workload {token} best?"
    ids = []
    for question, reference in ((good, good), (low, "Photosynthesis turns light into chemical energy.")):
        code, body = worker.query(question, reference)
        assert code == 202, body
        ids.append(body["question_id"])
    wait_until(lambda: all(worker.status(qid)[1].get("status") == "completed" for qid in ids), 90,
               "the seed questions to complete")


def chart_points(page, chart_id: str) -> int:
    """How many bars or line points of a chart have data (the script sets ``data-points``)."""
    return int(page.get_attribute(f"#{chart_id}", "data-points") or 0)


def test_dashboard_answers_a_question_in_the_browser(stack_env, start_worker_process, browser_page, artifacts):
    from playwright.sync_api import expect

    page = browser_page
    worker = start_worker_process(stack_env)
    token = uuid.uuid4().hex[:8]
    seed(worker, token)

    page.goto(worker.url + "/")
    expect(page).to_have_url(worker.url + "/dashboard")
    expect(page.locator("#tiles .tile")).to_have_count(8)

    question = f"What does the dashboard of pipeline {token} show?"
    page.fill("#question", question)
    page.fill("#reference", question)  # the echo backend answers with the question: a score near 1
    page.click("#ask-submit")
    expect(page.locator("#ask-id")).to_have_text(question_id(question))
    expect(page.locator("#ask-status")).to_have_text("completed", timeout=60_000)
    expect(page.locator("#ask-answer")).to_have_text(question)
    score = float(page.inner_text("#ask-score").split()[0])
    assert score >= Settings().scorer_threshold
    expect(page.locator("#ask-attempts")).to_have_text("1")
    expect(page.locator("#ask-origin")).to_have_text("answered now")

    # The table and the charts catch up on their next polls (every 2-3 s).
    expect(page.locator(f'#answers tr[data-question-id="{question_id(question)}"]')).to_have_count(1, timeout=15_000)
    page.wait_for_function(
        "ids => ids.every(id => Number(document.getElementById(id).dataset.points) > 0)",
        arg=list(CHARTS_WITH_POINTS), timeout=15_000)
    # Bars with data, once a metrics poll has seen the answer stored: all three questions are completed
    # (one bar), after 1 and 3 attempts (two bars).
    expect(page.locator("#chart-status")).to_have_attribute("data-points", "1", timeout=15_000)
    expect(page.locator("#chart-attempts")).to_have_attribute("data-points", "2", timeout=15_000)
    assert chart_points(page, "chart-scores") >= 2          # a high and a low score
    # One bar per topic of the graph, once the lag timer (every 5 s) has read them: an answer can be
    # faster than its first reading.
    expect(page.locator("#chart-lag rect.bar")).to_have_count(9, timeout=15_000)
    for chart in CHARTS_WITH_POINTS:
        assert page.locator(f"#{chart} svg").count() == 1
    expect(page.locator("#breaker")).to_have_text("LLM breaker: closed")
    # Auth is off: nothing was refused, so the key form never showed.
    expect(page.locator("#key-form")).to_be_hidden()
    expect(page.locator("#key-forget")).to_be_hidden()

    # Asked again: answered at once from the cache, and the page says so.
    page.click("#ask-submit")
    expect(page.locator("#ask-origin")).to_have_text("asked before: answer from the cache")
    expect(page.locator("#ask-answer")).to_have_text(question)

    page.wait_for_timeout(2500)  # one more metrics poll, so the line charts have a few points
    page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)
    assert page.errors == []

    check_polling(page)


def check_polling(page) -> None:
    """The pollers never stack requests, back off on errors, recover, and rest in a hidden tab.

    /metrics is held or failed by Playwright's router, so the timings are the page's own (base 2 s).
    """
    # A /metrics that does not answer for 7 s: setInterval would have sent three more; the chain waits.
    held = []

    def hold(route):
        held.append(route)

    page.route("**/metrics", hold)
    page.wait_for_timeout(7000)
    assert len(held) == 1
    held[0].continue_()  # before unroute, which would hand the held request on itself
    page.unroute("**/metrics")

    # Two errors, then the worker answers again: the waits double (the slow answer above made it 4 s
    # already: 8, 16 would follow); wait for one quick success first so the table starts from 2 s.
    with page.expect_response("**/metrics", timeout=15_000):
        pass
    with page.expect_response("**/metrics", timeout=15_000):
        pass
    times = []

    def fail_twice(route):
        times.append(time.monotonic())
        if len(times) <= 2:
            route.fulfill(status=503, content_type="application/json", body='{"error": "overloaded"}')
        else:
            route.continue_()

    page.route("**/metrics", fail_twice)
    deadline = time.monotonic() + 30
    while len(times) < 4 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    page.unroute("**/metrics")
    gaps = [round(b - a, 1) for a, b in zip(times, times[1:])]
    assert len(gaps) == 3, gaps
    assert 3.5 <= gaps[0] < 7 and 7 <= gaps[1] < 12 and gaps[2] < 4, gaps  # 4 s, 8 s, then back to 2 s

    # A hidden tab sends nothing; shown again, it refreshes at once.
    sent = []
    page.on("request", lambda r: sent.append(r.url) if "/metrics" in r.url or "/answers/" in r.url else None)
    visibility = """hidden => {
        Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
        document.dispatchEvent(new Event("visibilitychange"));
    }"""
    page.evaluate(visibility, True)
    page.wait_for_timeout(500)
    sent.clear()  # a request already on its way when the tab hid may still finish
    page.wait_for_timeout(7000)
    assert sent == []
    page.evaluate(visibility, False)
    page.wait_for_timeout(1000)
    assert any("/metrics" in url for url in sent) and any("/answers/" in url for url in sent), sent


def create_key(worker: Worker, name: str, scopes: str) -> str:
    """``qastream keys create`` against the worker's own database (SQLite in its QASTREAM_DATA_DIR)."""
    created = subprocess.run([sys.executable, "-m", "qastream", "keys", "create", name, "--scope", scopes],
                             env=worker.env, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


def use_key(page, key: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#key-form")).to_be_visible()
    page.fill("#key-input", key)
    page.click("#key-use")
    expect(page.locator("#key-form")).to_be_hidden()
    expect(page.locator("#key-forget")).to_be_visible()


def refuse(status: int, body: dict, headers: dict):
    """A route handler answering every request with this refusal."""
    return lambda route: route.fulfill(status=status, content_type="application/json", body=json.dumps(body),
                                       headers=headers)


def stored_key(page) -> dict:
    return page.evaluate("""() => ({ session: sessionStorage.getItem("qastream.apiKey"),
                                     local: Object.keys(localStorage).map((k) => localStorage.getItem(k)),
                                     url: location.href })""")


def test_dashboard_shows_what_an_api_key_may_see(stack_env, start_worker_process, browser_page, artifacts):
    """QASTREAM_AUTH=required: the page asks for a key, and shows each key what its scopes allow.

    The status codes themselves (401, 403, 429) are tested against workers in test_access_control;
    here the page's answer to each.
    """
    from playwright.sync_api import expect

    page = browser_page
    console = []
    page.on("console", lambda msg: console.append(msg.text))
    worker = start_worker_process(stack_env, auth="required")
    reader, root = create_key(worker, "dash-reader", "submit,read"), create_key(worker, "dash-admin", "admin")

    page.goto(worker.url + "/dashboard")
    expect(page.locator("#key-message")).to_have_text("this worker needs an API key")
    assert page.get_attribute("#key-input", "type") == "password"
    expect(page.locator("#key-forget")).to_be_hidden()

    # submit and read: the form asks and follows its question, the table shows it, the metrics panels
    # say what is missing.
    use_key(page, reader)
    expect(page.locator("#chart-throughput .denied")).to_have_text("this key lacks the metrics scope")
    expect(page.locator(".chart .denied")).to_have_count(6)
    expect(page.locator("#tiles .denied")).to_have_text("this key lacks the metrics scope")
    question = f"What does key {uuid.uuid4().hex[:8]} see on the dashboard?"
    page.fill("#question", question)
    page.fill("#reference", question)
    with page.expect_request("**/query") as sent, page.expect_request("**/events") as streamed:
        page.click("#ask-submit")
    assert sent.value.all_headers()["authorization"] == f"Bearer {reader}"
    assert streamed.value.all_headers()["authorization"] == f"Bearer {reader}"  # why it is not EventSource
    expect(page.locator("#ask-status")).to_have_text("completed", timeout=60_000)
    expect(page.locator("#ask-answer")).to_have_text(question)
    expect(page.locator(f'#answers tr[data-question-id="{question_id(question)}"]')).to_have_count(1, timeout=15_000)
    assert stored_key(page) == {"session": reader, "local": [], "url": worker.url + "/dashboard"}
    page.screenshot(path=str(artifacts / "dashboard-read-key.png"), full_page=True)

    # The form says when the worker refuses a question (the real 403 and 429 are test_access_control's).
    for status, body, headers, message in (
            (403, {"error": "API key 'dash-reader' lacks the submit scope this route needs"}, {},
             "this key lacks the submit scope"),
            (429, {"error": "slow down"}, {"Retry-After": "7"}, "too many requests: slow down; retry in 7 s")):
        page.route("**/query", refuse(status, body, headers))
        page.click("#ask-submit")
        expect(page.locator("#ask-answer")).to_have_text(message)
        expect(page.locator("#ask-status")).to_have_text("error")
        page.unroute("**/query")
    # A refresh told to wait (429, 503) waits at least Retry-After, whatever its back-off says.
    assert page.evaluate("""() => [
        nextDelay(2000, 2000, false, 10, retryAfterMs(new Response(null, { headers: { "Retry-After": "7" } }))),
        nextDelay(16000, 2000, false, 10, 7000), retryAfterMs(new Response(null)),
        retryAfterMs(new Response(null, { headers: { "Retry-After": "86400" } }))]""") == [7000, 30000, 0, 300000]

    # Forgotten, the key leaves the session, and what it saw leaves the page; an admin key sees everything.
    page.click("#key-forget")
    expect(page.locator("#key-form")).to_be_visible()
    assert stored_key(page)["session"] is None
    expect(page.locator("#chart-throughput .notice")).to_have_text("an API key is needed")
    expect(page.locator("#answers tbody")).to_have_text("an API key is needed")
    expect(page.locator("#ask-result")).to_be_hidden()
    page.screenshot(path=str(artifacts / "dashboard-key-form.png"))
    use_key(page, root)
    page.wait_for_function(
        "ids => ids.every(id => Number(document.getElementById(id).dataset.points) > 0)",
        arg=list(CHARTS_WITH_POINTS), timeout=15_000)
    expect(page.locator(".notice")).to_have_count(0)
    expect(page.locator("#tiles .tile")).to_have_count(8)
    expect(page.locator("#breaker")).to_have_text("LLM breaker: closed")
    assert stored_key(page) == {"session": root, "local": [], "url": worker.url + "/dashboard"}

    for key in (reader, root):
        assert all(key not in text for text in console), "a key was written to the console"
        assert all(key not in error for error in page.errors)
    # What the browser reports as errors: the refusals this test asked for (401 without a key, 403 for
    # /metrics with submit,read), never a script error.
    unexpected = [e for e in page.errors if not re.match(r"(40[13]|429) |Failed to load resource: .* (40[13]|429)", e)]
    assert unexpected == []


def test_dashboard_shows_each_stage_as_it_happens(broker, artifacts, tmp_path, start_worker_process, browser_page):
    """An LLM taking 2 s a call: the form shows generating while the answer is being written, then scoring and
    completed, each once and in order, read from the live stream; nothing polls GET /status."""
    from playwright.sync_api import expect

    slow = launch_llm(artifacts, "llm-dashboard-live", "--parallel", "4", "--latency", "2")
    try:
        page = browser_page
        worker = start_worker_process(isolated_env(broker, slow, tmp_path / "var"))
        requested = []
        page.on("request", lambda r: requested.append(r.url) if "/status/" in r.url else None)
        page.goto(worker.url + "/dashboard")
        question = f"What does stage {uuid.uuid4().hex[:8]} of the live form show?"
        qid = question_id(question)
        page.fill("#question", question)
        page.fill("#reference", question)
        page.click("#ask-submit")
        expect(page.locator('#ask-stages li[data-stage="generating"]')).to_have_count(1, timeout=30_000)
        assert page.inner_text("#ask-status") == "processing"    # shown while the LLM is still writing
        expect(page.locator("#ask-status")).to_have_text("completed", timeout=60_000)
        expect(page.locator("#ask-answer")).to_have_text(question)
        stages = page.locator("#ask-stages li").all_inner_texts()
        assert stages in (["queued", "generating", "scoring", "completed"], ["generating", "scoring", "completed"])
        assert requested and all(url.endswith(f"/status/{qid}/events") for url in requested), requested
        page.screenshot(path=str(artifacts / "dashboard-live-stages.png"), full_page=True)

        # The page's parser of the stream: events split across chunks, comments, CRLF, several data lines.
        assert page.evaluate("""() => {
            const [first, rest] = parseSse(": ping\\n\\nevent: queued\\nid: 1.1.0.0\\ndata: {\\"a\\":");
            const [second, tail] = parseSse(rest + "1}\\r\\n\\r\\ndata: x\\ndata: y\\n\\nid: 2");
            return [first, second, tail];
        }""") == [[], [{"event": "queued", "id": "1.1.0.0", "data": '{"a":1}'},
                       {"event": "message", "id": None, "data": "x\ny"}], "id: 2"]
        assert page.errors == []
    finally:
        stop(slow.process, "llm")
