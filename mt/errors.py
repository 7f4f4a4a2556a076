"""The one exception type a user should see: a one-line message, no traceback."""


class UserError(Exception):
    """Bad input or settings. The message says what, where, and how to fix it, on one line."""
