"""The one error type a user can cause, and how commands report it."""


class UsageError(Exception):
    """Bad input from the user: reported as one line and exit status 2, never a traceback.

    The message says what was wrong, what was received and what is accepted.
    """
