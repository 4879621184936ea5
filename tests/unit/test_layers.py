"""The layers of the code: setup.cfg's import-linter contracts (imports only point down, no cycles) are kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# import-linter's own API, run in a process of its own: this checkout first on the path, no cache written
CHECK = (
    "import sys\n"
    "from importlinter.cli import lint_imports\n"
    "sys.exit(lint_imports(config_filename='setup.cfg', no_cache=True, no_logo=True))\n"
)


def test_the_import_contracts_of_setup_cfg_are_kept() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "0 broken" in out.stdout
