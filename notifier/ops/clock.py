"""The two clocks. Waits, pacing, timeouts and ages run on a steady clock that
never steps; the quota day, deadlines and everything a person reads use wall
time. When the wall clock steps (NTP fixing a clock that ran wrong, an admin,
a VM's clock set on resume), :class:`StepWatch` notices, so that the moments
the service remembers in wall time can be re-based by the step instead of
freezing the schedule (a step back) or expiring it all at once (forward)."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


def _boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


# Linux's CLOCK_BOOTTIME goes on through a suspend, as the wall clock does: a
# laptop's sleep is then time that passed, not a step. Elsewhere, monotonic.
steady: Clock = _boottime if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic

STEP_TOLERANCE_S = 2.0  # NTP slews far slower than this; anything more is a step


class StepWatch:
    def __init__(
        self, wall: Clock = time.time, steady: Clock = steady, tolerance_s: float = STEP_TOLERANCE_S
    ) -> None:
        self.wall, self.steady, self.tolerance_s = wall, steady, tolerance_s
        self._offset = wall() - steady()

    def check(self) -> float:
        """The step of the wall clock since the last check (seconds, negative
        for back), or 0.0 when it only ticked (and drifted within tolerance)."""
        offset = self.wall() - self.steady()
        step, self._offset = offset - self._offset, offset
        return step if abs(step) > self.tolerance_s else 0.0
