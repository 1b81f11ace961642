"""The data side (probes, analysis, collector, stream) must import without Textual or Rich.

The collector runs on production hosts next to the target; it must stay lean, and analysis
must be testable and reusable without a UI. The same rule is an import-linter contract in
pyproject.toml; this test checks what is really loaded at run time.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import lifescope.analysis
import lifescope.probes

DATA_SIDE = [
    "lifescope.collector",
    "lifescope.stream",
    "lifescope.timeline",
    "lifescope.session",
    "lifescope.samples",
    "lifescope.target",
]
DATA_SIDE += [f"lifescope.probes.{m.name}" for m in pkgutil.iter_modules(lifescope.probes.__path__)]
DATA_SIDE += [
    f"lifescope.analysis.{m.name}" for m in pkgutil.iter_modules(lifescope.analysis.__path__)
]


def test_data_side_never_loads_textual_or_rich() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {DATA_SIDE!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"loaded: {done.stdout.strip()}"
    assert len(DATA_SIDE) >= 12
