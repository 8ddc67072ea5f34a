"""Small shared helpers: atomic file output, Kaldi data-dir files, logging."""
