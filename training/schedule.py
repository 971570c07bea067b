"""The learning-rate schedule: linear warm-up, then cosine decay to zero, as a pure function of the
step and a few numbers kept in the checkpoint.

A resumed run whose ``max_steps`` changed must not jump: the schedule it had been following is
continued from the learning rate it reached, by a new cosine from that value to zero at the new
end (warm-up, if unfinished, completes first). So extending a run mid-way trains longer at a
gently decaying rate. Extending a finished run (whose rate reached zero) would train at zero: the
trainer refuses it, and a new run from its model (``model.init_from``) is the way to train more.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Schedule:
    """Factor of the peak learning rate: warm-up over steps [0, warmup), cosine from ``start``
    (at factor ``initial``) to zero at ``end``."""

    warmup: int
    end: int
    start: int = 0
    initial: float = 1.0

    def factor(self, step: int) -> float:
        """The factor used for optimizer step ``step + 1`` (``step`` steps are done)."""
        if step < self.warmup:
            return self.initial * (step + 1) / self.warmup
        begin = max(self.start, self.warmup)
        progress = (step - begin) / max(1, self.end - begin)
        return self.initial * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))

    def extended(self, step: int, end: int) -> Schedule:
        """The schedule to follow from ``step`` when the run should now end at ``end``."""
        if end == self.end:
            return self
        if step < self.warmup:  # the warm-up does not depend on the end: finish it, then decay to the new end
            return Schedule(self.warmup, end, self.start, self.initial)
        return Schedule(0, end, step, self.factor(step))

    def state(self) -> dict[str, float]:
        return asdict(self)
