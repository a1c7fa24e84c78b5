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
A fourth watches the batches panel: a batch's progress bar fills to its total, and its Cancel
button cancels a batch behind a slow LLM; and the form shows a question cancelled while it waits.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
    # One bar per topic of the graph (topics.layout(): both lanes, the error topics, events, webhooks), once
    # the lag timer (every QASTREAM_LAG_INTERVAL_SECONDS) has seen the worker's assignment.
    expect(page.locator("#chart-lag rect.bar")).to_have_count(10, timeout=20_000)
    for chart in CHARTS_WITH_POINTS:
        assert page.locator(f"#{chart} svg").count() == 1
    expect(page.locator("#breaker")).to_have_text("LLM breaker: closed")
    # One row per LLM server, with its breaker's state.
    expect(page.locator("#servers tbody tr")).to_have_count(1)
    expect(page.locator("#servers tbody tr td").nth(1)).to_have_text("closed")
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

    # The batches panel, on a listing the router makes up: what a batch carries shows as text, and a cancel
    # the worker refuses (403) says which scope the key lacks.
    check_batch_refusals(page)

    # Forgotten, the key leaves the session, and what it saw leaves the page; an admin key sees everything.
    page.click("#key-forget")
    expect(page.locator("#key-form")).to_be_visible()
    assert stored_key(page)["session"] is None
    expect(page.locator("#chart-throughput .notice")).to_have_text("an API key is needed")
    expect(page.locator("#answers tbody")).to_have_text("an API key is needed")
    expect(page.locator("#batches tbody")).to_have_text("an API key is needed")
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


def check_batch_refusals(page) -> None:
    from playwright.sync_api import expect

    fake_id = "batch_" + "0" * 24
    now = time.time()
    listing = {"batches": [{
        "batch_id": fake_id, "status": "in_progress", "created_at": now - 60, "updated_at": now,
        "finished_at": None, "cancelled_at": None, "metadata": {"who": "<script>window.pwned=1</script>"},
        "request_counts": {"total": 4, "completed": 2, "low_quality": 1, "failed": 1, "cancelled": 0},
        "webhook": {"url": "https://hooks.example/<b>", "state": "failed",
                    "delivery": {"attempts": 5, "last_error": "HTTP 500 <i>no</i>"}}}]}
    listed, cancelled = re.compile(r"/batches\?limit=10$"), re.compile(r"/batches/batch_0+$")
    page.route(listed, lambda route: route.fulfill(status=200, content_type="application/json",
                                                   body=json.dumps(listing)))
    page.route(cancelled, refuse(
        403, {"error": "API key 'dash-reader' lacks the submit scope this route needs"}, {}))
    row = batch_row(page, fake_id)
    expect(row.locator(".progress-text")).to_have_text("3 / 4 done (1 low quality, 1 failed)", timeout=15_000)
    expect(row.locator(".progress span")).to_have_count(3)
    expect(row.locator("td.webhook")).to_have_text("failed (5 attempts)")
    assert row.locator("td.webhook").get_attribute("title") == "https://hooks.example/<b>\nlast error: HTTP 500 <i>no</i>"
    expect(row.locator(".meta")).to_have_text('{"who":"<script>window.pwned=1</script>"}')
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button.cancel").click()
    expect(page.locator("#batches-message")).to_have_text(
        f"cancelling {fake_id} failed: this key lacks the submit scope")
    assert page.locator("#batches script, #batches b, #batches i").count() == 0
    assert page.evaluate("window.pwned") is None
    page.unroute(listed)
    page.unroute(cancelled)
    expect(page.locator("#batches tbody")).to_have_text("no batches yet", timeout=15_000)


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


class HookReceiver:
    """A webhook receiver on 127.0.0.1 that answers 200 to every POST and counts them."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def batch_row(page, batch_id: str):
    return page.locator(f'#batches tr[data-batch-id="{batch_id}"]')


def test_dashboard_follows_batches_and_cancels_one(broker, artifacts, tmp_path, start_worker_process, browser_page):
    """An LLM of 4 slots x 1 s. The form shows a question cancelled while it waits; the batches panel shows a
    batch's bar fill to its total, its webhook delivered and its metadata as text; its Cancel button cancels a
    batch of 200 behind the slow LLM."""
    from playwright.sync_api import expect

    slow = launch_llm(artifacts, "llm-dashboard-batches", "--parallel", "4", "--latency", "1")
    hooks = HookReceiver()
    try:
        page = browser_page
        worker = start_worker_process(isolated_env(broker, slow, tmp_path / "var"), llm_concurrency="4",
                                      batch_check_interval_seconds="0.5", batch_cancel_grace_seconds="3",
                                      webhook_secret="dashboard-secret", webhook_allowed_hosts="127.0.0.1")
        token = uuid.uuid4().hex[:8]
        page.goto(worker.url + "/dashboard")
        expect(page.locator("#batches tbody")).to_have_text("no batches yet")

        # The form follows a question cancelled while it waits behind 20 others (5 s of LLM work): its live
        # stream ends on the terminal cancelled event.
        for i in range(20):
            ahead = f"What keeps slot {i} of pool {token} busy?"
            assert worker.query(ahead, ahead)[0] == 202
        question = f"Is question {token} of the form ever generated?"
        page.fill("#question", question)
        page.fill("#reference", "")
        page.click("#ask-submit")
        expect(page.locator("#ask-id")).to_have_text(question_id(question))
        code, body = worker.request("DELETE", f"/query/{question_id(question)}")
        assert code == 200 and body["cancelled"] is True, body
        expect(page.locator("#ask-status")).to_have_text("cancelled", timeout=30_000)
        expect(page.locator('#ask-stages li[data-stage="cancelled"]')).to_have_count(1)
        expect(page.locator("#ask-answer")).to_have_text("cancelled by request before it was generated")
        expect(page.locator("#ask-submit")).to_be_enabled()  # the stream ended: nothing is still following it

        # A small batch with a webhook and metadata a page must not run: its bar fills, it completes, its
        # delivery shows delivered, the metadata shows as text.
        hostile = {"note": "<img src=x onerror=\"window.pwned=1\">", "run": token}
        questions = [f"What does step {i} of batch {token} do?" for i in range(6)]
        code, small = worker.request("POST", "/batches", {
            "questions": [{"question_text": q, "original_answer": q} for q in questions],
            "metadata": hostile, "webhook_url": hooks.url})
        assert code == 202, small
        row = batch_row(page, small["batch_id"])
        expect(row).to_have_attribute("data-total", "6", timeout=15_000)
        expect(row).to_have_attribute("data-finished", "6", timeout=60_000)
        expect(row).to_have_attribute("data-status", "completed", timeout=30_000)
        expect(row.locator(".pill")).to_have_text("completed")
        expect(row.locator(".progress")).to_have_attribute("aria-valuenow", "6")
        expect(row.locator(".progress span")).to_have_count(1)
        expect(row.locator(".progress span.completed")).to_have_attribute("title", "completed: 6")
        expect(row.locator(".progress-text")).to_have_text("6 / 6 done")
        expect(row.locator("td.webhook")).to_have_attribute("data-state", "delivered", timeout=30_000)
        expect(row.locator("button.cancel")).to_be_hidden()
        assert json.loads(row.locator(".meta").inner_text()) == hostile
        assert page.locator("#batches img").count() == 0 and page.evaluate("window.pwned") is None
        assert len(hooks.received) == 1

        # A batch of 200 behind the slow LLM, cancelled from the panel: it shows cancelling (or cancelled,
        # if the panel refreshes after the grace), then cancelled with every item counted.
        code, big = worker.request("POST", "/batches", {"questions": [
            {"question_text": f"Which gear {i} of clock {token} turns?"} for i in range(200)]}, timeout=60)
        assert code == 202, big
        row = batch_row(page, big["batch_id"])
        expect(row).to_have_attribute("data-status", "in_progress", timeout=15_000)
        expect(page.locator("#batches tbody tr").first).to_have_attribute("data-batch-id", big["batch_id"])
        dialogs = []
        page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
        with page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
            row.locator("button.cancel").click()
        assert deleted.value.status == 200 and deleted.value.url.endswith(f"/batches/{big['batch_id']}")
        assert dialogs and big["batch_id"] in dialogs[0]
        expect(row).to_have_attribute("data-status", re.compile("^(cancelling|cancelled)$"))
        expect(row.locator("button.cancel")).to_be_hidden()
        code, state = worker.request("GET", f"/batches/{big['batch_id']}")
        assert code == 200 and state["status"] in ("cancelling", "cancelled")
        assert state["request_counts"]["cancelled"] >= 150, state
        expect(row).to_have_attribute("data-status", "cancelled", timeout=30_000)
        expect(row).to_have_attribute("data-finished", "200", timeout=15_000)
        cancelled = int(row.locator(".progress").get_attribute("aria-valuenow") or 0)
        assert cancelled == 200 and row.locator(".progress span.cancelled").count() == 1
        page.screenshot(path=str(artifacts / "dashboard-batches.png"), full_page=True)

        # The bar's parts: completed apart from its low-quality answers, then failed and cancelled.
        assert page.evaluate("""() => batchParts({ total: 10, completed: 5, low_quality: 2, failed: 1, cancelled: 3 })
            """) == [["completed", "completed", 3], ["low", "low quality", 2], ["failed", "failed", 1],
                     ["cancelled", "cancelled", 3]]
        assert page.errors == []
    finally:
        hooks.close()
        stop(slow.process, "llm")
