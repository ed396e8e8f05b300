"""The documentation renders offline: no renderer, stylesheet or font is fetched from the web.

The equations are typeset by a vendored MathJax bundle (``docs/javascripts/vendor/mathjax``)
instead of a CDN, and Material's Google Fonts are switched off. These checks read ``mkdocs.yml``
only; they build nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONFIG = ROOT / "mkdocs.yml"
VENDOR = DOCS / "javascripts" / "vendor" / "mathjax"
RENDERER = VENDOR / "tex-svg-full.js"
RENDERER_ENTRY = "javascripts/vendor/mathjax/tex-svg-full.js"
CONFIG_ENTRY = "javascripts/mathjax.js"
MAX_VENDORED_BYTES = 3 * 1024 * 1024
REMOTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)


class _TolerantLoader(yaml.SafeLoader):
    """A SafeLoader that reads mkdocs' ``!!python/name:...`` (and any other) tags as None."""


def _construct_unknown(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> None:
    return None


_TolerantLoader.add_multi_constructor("", _construct_unknown)


def _config() -> dict[str, Any]:
    with CONFIG.open(encoding="utf-8") as fh:
        # Safe: _TolerantLoader is a SafeLoader that builds no Python objects from tags.
        data = yaml.load(fh, Loader=_TolerantLoader)
    assert isinstance(data, dict), "mkdocs.yml is not a mapping"
    return data


def _entries(key: str) -> list[str]:
    """The paths listed under ``extra_javascript`` / ``extra_css`` (plain or ``path:`` form)."""
    paths = []
    for item in _config().get(key) or []:
        path = item.get("path") if isinstance(item, dict) else item
        assert isinstance(path, str), f"{key} has an entry without a path: {item!r}"
        paths.append(path)
    return paths


@pytest.mark.parametrize("key", ["extra_javascript", "extra_css"])
def test_extra_assets_are_local(key: str) -> None:
    remote = [p for p in _entries(key) if REMOTE.match(p)]
    assert not remote, f"{key} loads from the network: {remote}; vendor them under docs/"
    missing = [p for p in _entries(key) if not (DOCS / p).is_file()]
    assert not missing, f"{key} lists files that are not in docs/: {missing}"


def test_vendored_renderer_is_shipped_with_its_licence() -> None:
    assert RENDERER.is_file(), f"vendored MathJax bundle missing: {RENDERER.relative_to(ROOT)}"
    size = RENDERER.stat().st_size
    assert 0 < size <= MAX_VENDORED_BYTES, f"{RENDERER.name} is {size} bytes"
    licence = VENDOR / "LICENSE"
    assert licence.is_file(), "the vendored MathJax bundle needs its LICENSE beside it"
    assert "Apache License" in licence.read_text(encoding="utf-8")


def test_renderer_is_loaded_after_its_configuration() -> None:
    scripts = _entries("extra_javascript")
    assert RENDERER_ENTRY in scripts, f"{RENDERER_ENTRY} is not in extra_javascript"
    assert CONFIG_ENTRY in scripts, f"{CONFIG_ENTRY} is not in extra_javascript"
    # window.MathJax must be set before the bundle runs, or the config is ignored.
    assert scripts.index(CONFIG_ENTRY) < scripts.index(RENDERER_ENTRY)


def test_theme_fetches_no_web_fonts() -> None:
    theme = _config().get("theme") or {}
    assert theme.get("font") is False, "set theme.font: false so pages fetch no Google Fonts"
