"""The one exception type for a user's mistake.

The CLI prints a `UserError` as one line and exits with status 2; anything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a missing folder, a mistyped key, a file that is not UTF-8..."""
