"""The one error type a user sees for bad input."""


class RequestError(ValueError):
    """Bad input: names the field and the value, so the message alone says what to fix.

    Args:
        field: the request field (as the CLI flag and the API field name it, e.g. ``frames``).
        value: the value the user gave.
        reason: what is wrong with it, e.g. "must be at least 1".
    """

    def __init__(self, field: str, value, reason: str):
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}={value!r}: {reason}")
