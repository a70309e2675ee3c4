"""The core's typed contracts hold: appliance/core passes ``mypy --strict``."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_core_passes_mypy_strict():
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "appliance/core"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
