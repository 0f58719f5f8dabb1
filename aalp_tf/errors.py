"""The one error type a user can cause, and how commands report it."""


class UsageError(Exception):
    """Bad input from the user: reported as one line and exit status 2, never a traceback.

    The message says what was wrong, what was received and what is accepted.
    """


class TrainingDiverged(UsageError):
    """The loss or the weights turned non-finite: the run stops, saying where, and keeps its
    last finite checkpoint. Reported like a UsageError (one line, exit status 2): the remedy is
    in the user's settings, a smaller learning rate or weight."""
