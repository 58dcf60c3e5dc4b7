"""The one exception the library raises for problems a user can fix."""

from __future__ import annotations


class PuppetError(Exception):
    """A problem with the user's input or environment, with the fix.

    The CLI prints ``str(error)`` on one line and exits with code 2; library code raises
    this instead of letting a traceback reach the user.
    """

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} {fix}" if fix else problem)


class NotAvailableYet(PuppetError):
    """A capability that is planned but not built yet (named in an open issue)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is not available yet.", "See the open issues in the tracker.")
