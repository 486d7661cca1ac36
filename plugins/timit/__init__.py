"""TIMIT-layout corpora: the word slicer for the real corpus (``timit_words``) and
a synthetic corpus in the same layout (``synthetic_timit``)."""
