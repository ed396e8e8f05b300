"""``python -m mmdg.avdigits``: build AV-Digits-DG (the builder is `mmdg.data_builders.avdigits`).

Run from ``examples/``::

    python -m mmdg.avdigits --out DIR --seed 0 --pairs 3600
"""

from __future__ import annotations

from collections.abc import Sequence

from .data_builders import avdigits as _builder

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see `mmdg.data_builders.avdigits`."""
    return _builder.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
