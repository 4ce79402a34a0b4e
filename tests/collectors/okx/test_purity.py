"""collectors/okx is a library you could publish alone: importing it must not import Django or the project."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import importlib, pkgutil, sys
import collectors.okx as pkg
for module in pkgutil.iter_modules(pkg.__path__):
    importlib.import_module(f"collectors.okx.{module.name}")
banned = [m for m in sys.modules if m.split(".")[0] in {"django", "celery", "rest_framework", "candles", "okxproject"}]
print(",".join(sorted(banned)))
"""


def test_importing_every_okx_module_loads_no_django_celery_or_project_code():
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
