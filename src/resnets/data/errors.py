"""The one exception type for user-facing data problems."""


class DataError(ValueError):
    """A data set is missing, malformed or misconfigured; the message says what to do about it."""
