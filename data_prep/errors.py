"""The one exception type data_prep raises for bad input or bad settings."""
from __future__ import annotations


class DataPrepError(Exception):
    """Bad input, bad settings or an output problem, with a one-line, human-readable message.

    ``path`` and ``line`` (1-based) name the offending input line when one is known; the
    message already contains them, so ``str(err)`` is all a caller needs to print.
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        if path is not None and line is not None:
            text = f"{path}, line {line}: {message}"
        elif path is not None:
            text = f"{path}: {message}"
        else:
            text = message
        super().__init__(text)
        self.path = path
        self.line = line
        self.reason = message
