"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright.

A worker with the echo LLM serves the page; the test asks a question with the
form, waits until the page shows the answer and its score, checks that every
chart drew data, and leaves a screenshot in test-artifacts/dashboard.png.
Then it holds and fails /metrics to check the page's polling: one request in
flight, waits that double on errors and recover, nothing from a hidden tab.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from stackutil import Worker, missing, wait_until

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
    lag_bars = page.locator("#chart-lag rect.bar")
    assert lag_bars.count() == 8                            # one bar per topic of the graph
    for chart in CHARTS_WITH_POINTS:
        assert page.locator(f"#{chart} svg").count() == 1
    expect(page.locator("#breaker")).to_have_text("LLM breaker: closed")

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
