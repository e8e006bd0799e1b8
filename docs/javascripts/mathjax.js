// MathJax 3 configuration for pymdownx.arithmatex (generic mode) and for the notebooks
// rendered by mkdocs-jupyter (nbconvert keeps $...$ and $$...$$ inside jp-RenderedMarkdown
// elements, whose <p> children carry no class). MathJax typesets everything outside
// <pre>/<code> and outside elements of class tex2jax_ignore. The MathJax script itself is
// served by the site (javascripts/vendor/mathjax/, copied by docs/hooks.py): no network.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: "tex2jax_ignore",
    processHtmlClass: "arithmatex|jp-RenderedMarkdown|jp-MarkdownOutput",
  },
};

// Material for MkDocs emits document$ for the page that is loaded and, with the theme's
// navigation.instant feature, again for every page it swaps in without a reload. MathJax
// typesets the loaded page itself at start-up, so the first emission needs nothing; a
// swapped-in page is typeset once start-up is over. The output cache is deliberately not
// cleared (MathJax.startup.output.clearCache()): that drops the glyph CSS of the CHTML
// output, and every formula is then laid out as an empty, zero-width box.
let amidFirstPage = true;
document$.subscribe(() => {
  if (amidFirstPage) {
    amidFirstPage = false;
    return;
  }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise = MathJax.startup.promise.then(() => {
      MathJax.typesetClear();
      MathJax.texReset();
      return MathJax.typesetPromise();
    });
  }
});
