"""The command-line tools' helpers: argument parsing and progress display, the ``mixture``
subcommand, the report's document model and text rendering, and the numerical steps of
``amid-ref verify``. They sit above the reference and the battery engine; neither imports
them."""
