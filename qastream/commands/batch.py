"""``qastream batch submit|status|results|cancel``: batches through the HTTP API of a running worker.

``submit FILE`` reads FILE with the readers ``qastream load`` uses (Yahoo
CSV, JSON/JSONL, dictd), sends it as one NDJSON ``POST /batches`` (each
record's own id, or its position, as ``custom_id``) and prints the batch id
alone on stdout, so a script can capture it; ``--wait`` then follows the
batch with a progress bar until it ends.  The key comes from ``--key`` or
``QASTREAM_API_KEY``.  A refusal is one line on stderr and exit code 1.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, Optional

import aiohttp
import click
from faust.cli import AppCommand, argument, option
from tqdm import tqdm

from qastream.app import app, settings
from qastream.commands.keys import DirectCommand
from qastream.datasets import FORMATS, BadRows, Record, open_datasets

ACTIONS = ("submit", "status", "results", "cancel")
#: Seconds between two looks at a batch while ``--wait`` follows it.
POLL_SECONDS = 2.0
#: States a batch does not leave.
ENDED = ("completed", "cancelled")


def ndjson_lines(records: list[Record]) -> bytes:
    """The NDJSON body of a batch: one question per line, the record's id (or its position) as custom_id."""
    lines = [json.dumps({"question_text": r.question, "original_answer": r.answer,
                         "custom_id": r.id if r.id is not None else str(n)}, ensure_ascii=False)
             for n, r in enumerate(records, start=1)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def headers_for(key: Optional[str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


async def answer_of(response: aiohttp.ClientResponse, what: str) -> Any:
    """The JSON body of a successful answer; a :class:`click.ClickException` naming the error otherwise."""
    try:
        body = await response.json(content_type=None)
    except ValueError:
        body = {"error": (await response.text())[:300]}
    if response.status >= 400:
        message = body.get("error", body) if isinstance(body, dict) else body
        extra = ""
        if isinstance(body, dict) and body.get("invalid_lines"):
            extra = "\n" + "\n".join(f"  line {e['line']}: {e['error']}" for e in body["invalid_lines"])
        raise click.ClickException(f"{what}: HTTP {response.status}: {message}{extra}")
    return body


def progress_of(batch: dict[str, Any]) -> int:
    counts = batch["request_counts"]
    return int(counts["completed"] + counts["failed"] + counts["cancelled"])


async def follow(session: aiohttp.ClientSession, url: str, batch_id: str, timeout: float) -> dict[str, Any]:
    """Poll the batch until it ends (or ``timeout`` seconds pass), with a progress bar; the last state."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    bar: Optional[tqdm] = None
    try:
        while True:
            async with session.get(f"{url}/batches/{batch_id}") as response:
                batch = await answer_of(response, f"GET /batches/{batch_id}")
            if bar is None:
                bar = tqdm(total=batch["request_counts"]["total"], desc=batch_id, unit="q")
            bar.n = progress_of(batch)
            bar.set_postfix(status=batch["status"], refresh=False)
            bar.refresh()
            if batch["status"] in ENDED or loop.time() > deadline:
                return batch
            await asyncio.sleep(POLL_SECONDS)
    finally:
        if bar is not None:
            bar.close()


async def submit(session: aiohttp.ClientSession, url: str, path: str, fmt: str, webhook: Optional[str],
                 skip_invalid: bool) -> str:
    bad = BadRows()
    try:
        records = list(open_datasets([path], bad, fmt))
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if not records:
        raise click.ClickException(f"{path}: no question could be read" + "".join(f"\n  {line}" for line in bad.lines()))
    params = {k: v for k, v in (("webhook_url", webhook), ("skip_invalid", "true" if skip_invalid else None)) if v}
    async with session.post(f"{url}/batches", data=ndjson_lines(records), params=params,
                            headers={"Content-Type": "application/x-ndjson"}) as response:
        body = await answer_of(response, "POST /batches")
    counts = body["request_counts"]
    click.echo(f"batch {body['batch_id']}: {counts['total']} question(s), {counts['completed']} already answered"
               + (f"; the reader skipped {bad.total} row(s)" if bad.total else "")
               + (f"; {len(body['skipped_lines'])} invalid line(s) skipped" if body.get("skipped_lines") else ""),
               err=True)
    click.echo(body["batch_id"])
    return str(body["batch_id"])


async def results(session: aiohttp.ClientSession, url: str, batch_id: str, output: Optional[str]) -> None:
    """Stream the NDJSON results to ``output`` (stdout when absent) as they arrive."""
    async with session.get(f"{url}/batches/{batch_id}/results") as response:
        if response.status != 200:
            await answer_of(response, f"GET /batches/{batch_id}/results")
        sink = open(output, "wb") if output else sys.stdout.buffer
        lines = 0
        try:
            async for chunk in response.content.iter_chunked(65536):
                sink.write(chunk)
                lines += chunk.count(b"\n")
        finally:
            if output:
                sink.close()
            else:
                sink.flush()
    if output:
        click.echo(f"wrote {lines} result line(s) to {output}", err=True)


@app.command(
    argument("action", type=click.Choice(ACTIONS)),
    argument("target"),
    option("--url", default=None, help="Worker to talk to (default http://WEB_HOST:WEB_PORT)."),
    option("--key", envvar="QASTREAM_API_KEY", default=None,
           help="API key (default: the QASTREAM_API_KEY environment variable)."),
    option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True,
           help="submit: reader of FILE, as for qastream load."),
    option("--webhook", default=None, help="submit: URL called when the batch ends."),
    option("--skip-invalid", is_flag=True, help="submit: accept the batch without its invalid lines."),
    option("--wait", is_flag=True, help="submit: follow the batch with a progress bar until it ends."),
    option("--wait-timeout", type=float, default=86400.0, show_default=True, help="submit --wait: longest wait, s."),
    option("-o", "--output", default=None, help="results: write to this file instead of stdout."),
    base=DirectCommand,
)
async def batch(self: AppCommand, action: str, target: str, url: Optional[str], key: Optional[str], fmt: str,
                webhook: Optional[str], skip_invalid: bool, wait: bool, wait_timeout: float,
                output: Optional[str]) -> None:
    """Batches: batch submit FILE [--webhook URL] [--wait] | status ID | results ID [-o FILE] | cancel ID."""
    if action != "submit" and (webhook or wait or skip_invalid):
        raise click.UsageError(f"--webhook, --wait and --skip-invalid apply to submit, not {action}")
    if action != "results" and output:
        raise click.UsageError(f"-o applies to results, not {action}")
    base = (url or f"http://{settings.web_host}:{settings.web_port}").rstrip("/")
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
    try:
        async with aiohttp.ClientSession(timeout=timeout, headers=headers_for(key)) as session:
            if action == "submit":
                batch_id = await submit(session, base, target, fmt, webhook, skip_invalid)
                if wait:
                    ended = await follow(session, base, batch_id, wait_timeout)
                    click.echo(f"batch {batch_id} {ended['status']}: " + json.dumps(ended["request_counts"]), err=True)
            elif action == "status":
                async with session.get(f"{base}/batches/{target}") as response:
                    click.echo(json.dumps(await answer_of(response, f"GET /batches/{target}"), indent=2))
            elif action == "results":
                await results(session, base, target, output)
            else:
                async with session.delete(f"{base}/batches/{target}") as response:
                    click.echo(json.dumps(await answer_of(response, f"DELETE /batches/{target}"), indent=2))
    except aiohttp.ClientError as exc:
        raise click.ClickException(f"{base}: {type(exc).__name__}: {exc}") from None
