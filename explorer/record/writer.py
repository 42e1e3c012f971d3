"""Moved: the run-folder writer lives in explorer.runs.writer (the run-folder package holds the schema,
writer, reader and importers). This name stays so that old imports keep working; it is that module."""

import sys

from explorer.runs import writer as _writer

sys.modules[__name__] = _writer
