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

document$.subscribe(() => {
  if (window.MathJax && MathJax.startup && MathJax.typesetPromise) {
    MathJax.startup.output.clearCache();
    MathJax.typesetClear();
    MathJax.texReset();
    MathJax.typesetPromise();
  }
});
