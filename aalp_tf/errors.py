"""The one error type a user can cause, and how commands report it."""


class UsageError(ValueError):
    """Bad input from the user: reported as one line and exit status 2, never a traceback.

    The message says what was wrong, what was received and what is accepted. A ValueError, so
    Python code calling the library (aalp_tf.AdversarialModel, aalp_tf.evaluate) catches bad
    input as the ValueError Keras raises for it.
    """


def invalid_argument(name: str, expected: str, received: str) -> ValueError:
    """Keras' one-line message for a bad argument of the Python API: what was expected, and
    `received` ("x=3" or a description of what came in)."""
    return ValueError(f"Invalid value received for argument `{name}`. Expected {expected}. "
                      f"Received: {received}")
