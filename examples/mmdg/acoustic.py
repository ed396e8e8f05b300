"""``python -m mmdg.acoustic``: build AV-Digits-DG acoustic (the builder is
`mmdg.data_builders.acoustic`).

Run from ``examples/``::

    python -m mmdg.acoustic --out mmdg/data/av-digits-dg-acoustic --seed 0
"""

from __future__ import annotations

from collections.abc import Sequence

from .data_builders import acoustic as _builder

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see `mmdg.data_builders.acoustic`."""
    return _builder.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
