"""Capped exponential backoff, plain and deterministic unless jitter is asked for."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays `initial_s`, x`factor` each failure, capped at `max_s`; `reset()` after a success.

    `jitter` (0..1) takes up to that fraction off each delay, so instances do not retry in step.
    """

    initial_s: float = 0.1
    max_s: float = 5.0
    factor: float = 2.0
    jitter: float = 0.0
    failures: int = field(default=0, init=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        delay = min(self.initial_s * self.factor**self.failures, self.max_s)
        self.failures += 1
        if self.jitter:
            delay -= delay * self.jitter * self._rng.random()
        return delay

    def reset(self) -> None:
        self.failures = 0
