"""Put on PYTHONPATH by ``python -m tests.shifted_clock``: every Python process
of the run — pytest, and the service and emulator it starts — reads a wall
clock moved by ``NOTIFIER_TEST_CLOCK_SHIFT_S`` seconds, still ticking.

time-machine moves ``time.time()``, ``datetime.now()`` and their kin, not the
monotonic clock: waits, timeouts and asyncio run on real time, as they must.
(libfaketime moves both or neither cleanly: with both, every thread's
``Event.wait(timeout)`` hangs; with the wall clock alone, ``time.sleep`` fails.)
"""

import os

_shift = os.environ.get("NOTIFIER_TEST_CLOCK_SHIFT_S")
if _shift:
    import time

    import time_machine

    time_machine.travel(time.time() + float(_shift), tick=True).start()
