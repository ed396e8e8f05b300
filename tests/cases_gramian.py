"""Property-suite cases of the gramian methods."""

from __future__ import annotations

from helpers import Case

import gradsurgery as gs  # noqa: F401

CASES: dict[str, Case] = {}
