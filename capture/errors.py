"""The one error type users see: a clear, one-line message and a non-zero exit."""


class GutcheckError(Exception):
    """A problem with the user's input or environment, told in one line."""
