from __future__ import annotations

import subprocess
import sys

from models.cpu_load import OtherLoad

# Burns 0.3 s of its own CPU time, however busy the machine is.
BURN = "import time\nwhile time.process_time() < 0.3:\n    pass\n"


def test_another_process_burning_cpu_is_counted() -> None:
    with OtherLoad() as other:
        subprocess.run([sys.executable, "-c", BURN], check=True)
    # The child's 0.3 s (plus its start-up) is someone else's CPU, never ours.
    assert other.cpu_s >= 0.25
    assert other.cores > 0
