"""The one error type a user can cause, and how commands report it."""


class UsageError(ValueError):
    """Bad input from the user: reported as one line and exit status 2, never a traceback.

    The message says what was wrong, what was received and what is accepted. A ValueError, so
    Python code calling the library (aalp_tf.AdversarialModel, aalp_tf.evaluate) catches bad
    input as the ValueError Keras raises for it.
    """


class TrainingDiverged(UsageError):
    """The loss or the weights turned non-finite: the run stops, saying where, and keeps its
    last finite checkpoint. Reported like a UsageError (one line, exit status 2): the remedy is
    in the user's settings, a smaller learning rate or weight."""


def invalid_argument(name: str, expected: str, received: str) -> ValueError:
    """Keras' one-line message for a bad argument of the Python API: what was expected, and
    `received` ("x=3" or a description of what came in)."""
    return ValueError(f"Invalid value received for argument `{name}`. Expected {expected}. "
                      f"Received: {received}")
