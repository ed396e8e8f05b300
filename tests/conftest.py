"""Test configuration: Hypothesis profiles.

``ci`` (the default) draws the same examples on every run (``derandomize``), so a red run is
a change's doing, never a new draw's. ``explore`` draws fresh random examples each run, and
``thorough`` many more of them: run them to look for counterexamples
(``HYPOTHESIS_PROFILE=explore make test``); a failure they find is fixed and pinned with
``@example``.
"""

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=60, derandomize=True, **_COMMON)
settings.register_profile("explore", max_examples=60, **_COMMON)
settings.register_profile("thorough", max_examples=1000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
