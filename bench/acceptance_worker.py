"""The qastream worker without its generate stage, for ``bench/acceptance.py``.

Acceptance is measured alone: every accepted question is still written to
the database, produced to questions-pending with its ``queued`` event and
folded into the status tables by ``track``, but no LLM call follows.  Leaving
the stage out is cleaner than a slow LLM: a stage that cannot keep up fills
its 4,096-event stream buffer, and then Faust's fetcher waits for that buffer
and stops feeding every other agent, ``track`` included, which would make
acceptance look cheaper than it is.

    python bench/acceptance_worker.py worker -l info   (with the QASTREAM_* settings of the run)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qastream.app import app  # noqa: E402

app.discover()  # import every agent, table and view now; a second scan does not register them again
del app.agents["qastream.agents.generate.generate"]

if __name__ == "__main__":
    app.main()
