"""What the schema handler reads from a Lambda context: its remaining time."""

from __future__ import annotations

import time


class LambdaContext:
    """A Lambda context stand-in whose budget runs down in real time."""

    def __init__(self, budget_ms: int = 300_000) -> None:
        self.deadline = time.monotonic() + budget_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)
