"""One exception hierarchy for fleetscan; every message names the object and what to do."""

from __future__ import annotations


class FleetscanError(Exception):
    """Base of every error fleetscan raises on purpose."""


class UsageError(FleetscanError):
    """Bad input from the user (arguments, files); reported before any cluster call."""


class InputFileError(UsageError):
    """A problem in a user-written file, located by file and line where known."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(
            f"{path}: " + "; ".join(problems)
            if len(problems) == 1
            else f"{path}: {len(problems)} problems:\n  " + "\n  ".join(problems)
        )
