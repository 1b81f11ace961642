"""`python -m lifescope` is the `lifescope` command."""

from __future__ import annotations

import sys

from lifescope.cli import main

sys.exit(main())
