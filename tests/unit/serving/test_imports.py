"""What the service loads at start-up: applying a calibrator must not pull in scikit-learn (fitting does)."""

from __future__ import annotations

import subprocess
import sys


def test_the_service_modules_load_without_scikit_learn() -> None:
    code = "import sys, serving.app, models.predictor, models.calibration; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
