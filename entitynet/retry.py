"""How long to wait before retrying a remote call: shared by the SPARQL and the LLM clients."""

from __future__ import annotations

import random


class WaitTooLong(Exception):
    """The server asked for a pause longer than we are allowed to wait."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the server asked to wait {seconds:.0f}s")
        self.seconds = seconds


class Backoff:
    """Exponential backoff with "equal jitter", unless the server said how long (Retry-After).

    Wait before retry n (1-based): half of min(max_wait, first * 2**(n-1)) plus a random share of
    the other half, so clients that failed together do not come back together. A Retry-After
    longer than ``max_wait`` raises ``WaitTooLong`` instead of hammering the server early.
    """

    def __init__(self, first: float, max_wait: float, seed: int | None = None) -> None:
        self.first = first
        self.max_wait = max_wait
        self.random = random.Random(seed)

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            if retry_after > self.max_wait:
                raise WaitTooLong(retry_after)
            return retry_after
        ceiling = min(self.max_wait, self.first * 2 ** (attempt - 1))
        return ceiling / 2 + self.random.uniform(0, ceiling / 2)
