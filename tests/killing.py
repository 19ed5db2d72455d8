"""SIGKILL worker processes at random moments while they work, restarting each, until the work is done."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable


def kill_until_done(
    start: Callable[[], subprocess.Popen],
    done: Callable[[], tuple[bool, object]],
    *,
    seed: int,
    seconds: float,
    max_kills: int,
    pause: tuple[float, float],
    workers: int = 2,
) -> int:
    """Run ``workers`` processes from ``start``; between checks of ``done`` (finished?, progress), which
    names the progress when time runs out, kill one at random and start another, at most ``max_kills``
    times. Returns how many were killed; every process is gone afterwards."""
    rng = random.Random(seed)
    running = [start() for _ in range(workers)]
    kills = 0
    deadline = time.monotonic() + seconds
    try:
        while True:
            finished, progress = done()
            if finished:
                return kills
            assert time.monotonic() < deadline, f"not done in time: {progress}"
            time.sleep(rng.uniform(*pause))
            if kills < max_kills:
                victim = rng.randrange(workers)
                running[victim].send_signal(signal.SIGKILL)
                running[victim].wait(timeout=10)
                running[victim] = start()
                kills += 1
    finally:
        for proc in running:
            proc.kill()
            proc.wait(timeout=10)
