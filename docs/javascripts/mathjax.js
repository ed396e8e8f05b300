// MathJax 3 configuration for pymdownx.arithmatex (generic mode).
//
// The renderer itself is vendored (javascripts/vendor/mathjax/tex-svg-full.js, MathJax 3.2.2,
// Apache-2.0) and loaded after this file, so equations typeset without network access: the
// bundle has the TeX extensions built in (no autoloading) and its SVG output draws glyphs as
// paths (no web fonts to fetch).
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  svg: {
    fontCache: "local",
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

// Typeset again after every page change (Material's instant navigation).
document$.subscribe(() => {
  MathJax.startup.output.clearCache();
  MathJax.typesetClear();
  MathJax.texReset();
  MathJax.typesetPromise();
});
