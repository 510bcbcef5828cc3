"""Chat with documents: the Qt-free, MLX-free core.

A file a person attaches goes through four steps, each its own module so each can be tested alone:

* :mod:`olmo3.docs.extract` reads the file once into a :class:`~olmo3.docs.extract.Document` (text per
  page), or refuses it with a one-sentence :class:`~olmo3.docs.extract.DocumentError`.
* :mod:`olmo3.docs.chunk` splits a long document into overlapping passages of about 512 tokens that remember
  their pages.
* :mod:`olmo3.docs.index` keeps the extracted text and the passages in SQLite (FTS5, BM25), keyed by
  conversation, so the chat still works after the original file moved or was deleted.
* :mod:`olmo3.docs.prompt` decides whether a document goes into the user turn whole or as retrieved
  passages, and writes that text with plain, readable delimiters (content, never special tokens).

This package never imports Qt or MLX: the CLI, the GUI and the benches all use it.
"""

from __future__ import annotations
