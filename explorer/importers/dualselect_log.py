"""Moved: the importer lives in explorer.runs.importers.dualselect_log (the run-folder package). This name
stays so that old imports keep working; it is that module."""

import sys

from explorer.runs.importers import dualselect_log as _importer

sys.modules[__name__] = _importer
