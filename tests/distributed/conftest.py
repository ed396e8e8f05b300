"""One pool of two gloo ranks for the whole distributed suite (spawning costs seconds)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dist_pool import Pool


@pytest.fixture(scope="session")
def pool() -> Iterator[Pool]:
    ranks = Pool(world=2)
    yield ranks
    ranks.close()
