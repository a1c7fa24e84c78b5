"""``qastream calibrate`` end to end on a tiny dictionary with the echo LLM server and the real scorer.

The echo backend answers with the question, so the ``llm_own`` and
``question_echo`` distributions are the same pairs: the test checks the
plumbing (sample, server, scoring, recommendation, JSON), not SmolLM2.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qastream.datasets.dictd import B64

TOPICS = ["compiler", "kernel", "packet", "sorting", "cache", "thread"]


def b64(value: int) -> str:
    digits = ""
    while True:
        digits, value = B64[value % 64] + digits, value // 64
        if value == 0:
            return digits


def write_dictionary(directory: Path) -> Path:
    data, index = b"", []
    for word in TOPICS:
        body = " ".join(f"A {word} is a {word} thing about {word}s number {i}." for i in range(8))
        raw = f"{word}\n\n   {body}\n\n".encode()
        index.append(f"{word}\t{b64(len(data))}\t{b64(len(raw))}")
        data += raw
    (directory / "tiny.index").write_text("\n".join(index) + "\n")
    with gzip.open(directory / "tiny.dict.dz", "wb") as handle:
        handle.write(data)
    return directory / "tiny.index"


# The command runs the LLM and the scorer over every pair (its own bound: 300 s).
@pytest.mark.timeout(600)
def test_calibrate_saves_distributions_and_a_recommendation(tmp_path: Path):
    index = write_dictionary(tmp_path)
    output = tmp_path / "calibration.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QASTREAM_")}
    env.update(QASTREAM_DATA_DIR=str(tmp_path / "var"), QASTREAM_SCORER_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "qastream", "calibrate", "--dataset", str(index), "--sample", "5",
                             "--llm-backend", "echo", "--output", str(output)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "recommended threshold" in result.stdout and "Youden" in result.stdout
    figures = json.loads(output.read_text())
    assert figures["sample_size"] == 5 and len(figures["items"]) == 5
    assert figures["llm"]["model"] == "echo" and "--model echo" in figures["command"]   # the backend's own name
    assert set(figures["distributions"]) == {"llm_own", "llm_other", "reference_half", "reference_other",
                                             "question_echo"}
    for item in figures["items"]:
        assert item["answer"] == item["question"]              # echo
        assert item["llm_own"] == item["question_echo"]
        assert item["llm_own"] > item["llm_other"]            # own reference names the same term
    rec = figures["recommendation"]
    assert 0 <= rec["best"]["threshold"] <= 1 and rec["best"]["youden_j"] > 0
    assert figures["distributions"]["reference_half"]["mean"] > figures["distributions"]["reference_other"]["mean"]
