"""The one exception type for mistakes a user can make (bad config, bad path, bad trainer)."""


class PbtError(Exception):
    """A user-facing error: one line that names what is wrong and what would be right.

    The CLI prints the message alone and exits with code 2; library callers can catch it.
    """
