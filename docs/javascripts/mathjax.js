// MathJax 3 configuration for pymdownx.arithmatex (generic mode) and for the notebooks
// rendered by mkdocs-jupyter (nbconvert keeps $...$ and $$...$$ inside jp-RenderedMarkdown
// elements, without the arithmatex class). The MathJax script itself is referenced from a
// CDN in mkdocs.yml: the reader's browser loads it; the build never downloads anything.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
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
