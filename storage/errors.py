"""Errors storage raises. Each says what to do; ``StorageBusy`` means: nothing was written, try again."""
from __future__ import annotations

from typing import List


class StorageError(Exception):
    """A request storage cannot carry out (unknown project, missing file, bad mask...)."""


class StorageBusy(StorageError):
    """Another writer held the database for longer than the wait limit; the transaction was rolled back."""

    retryable = True


class DatabaseUnusable(StorageError):
    """The database file cannot be used as it is (not a database, truncated, damaged, or written by a newer
    iseg). Nothing was changed in it; ``path`` names it (None for a server database)."""

    def __init__(self, message: str, path=None):
        super().__init__(message)
        self.path = path


class CocoFormatError(StorageError):
    """A COCO file that cannot be imported. ``problems`` names every bad record; nothing was imported."""

    def __init__(self, source: str, problems: List[str]):
        self.problems = list(problems)
        shown = "\n  ".join(self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        super().__init__(f"{source}: {len(self.problems)} problem(s), nothing was imported:\n  {shown}{more}")


class LabelClash(StorageError):
    """A COCO file whose categories differ from the project's label set, imported with ``on_clash="refuse"``."""

    def __init__(self, source: str, clashes: List[str]):
        self.clashes = list(clashes)
        super().__init__(f"{source}: its categories clash with the project's label set, nothing was imported: "
                         + "; ".join(self.clashes) + ". Import with 'map by name' to match labels by name (new "
                         "names are added to the label set).")
