"""The one exception type the CLI turns into a clean message (no traceback)."""


class TLIError(ValueError):
    """Bad input or an unsupported combination; the message says what to do instead."""
