"""``qastream report``: the quality table of everything stored, as text or JSON."""

from __future__ import annotations

import json
import sys
from typing import Optional

from faust.cli import option

from qastream.app import app, settings
from qastream.db.report import quality_report, render_report
from qastream.services.storage import make_engine


@app.command(
    option("--json", "as_json", is_flag=True, help="Print the figures as JSON."),
    option("--threshold", type=float, default=None,
           help="Gate to count answers below (default: QASTREAM_SCORER_THRESHOLD)."),
)
async def report(self, as_json: bool, threshold: Optional[float]) -> None:
    """Quality of the stored answers: scores, attempts, low quality, gain from regeneration."""
    engine = make_engine(settings.resolved_database_url())
    try:
        with engine.connect() as connection:
            figures = quality_report(connection, settings.scorer_threshold if threshold is None else threshold,
                                     settings.max_attempts)
    finally:
        engine.dispose()
    if as_json:
        sys.stdout.write(json.dumps(figures, indent=2) + "\n")
    else:
        self.say(f"quality of the answers in {engine.url.render_as_string(hide_password=True)}")
        for line in render_report(figures):
            self.say(line)
