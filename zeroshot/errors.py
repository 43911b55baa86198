"""The one exception type the toolkit raises for problems a user can fix."""


class ZeroshotError(Exception):
    """A problem with the user's input, files or environment, with its fix in the message.

    The command-line scripts print these messages as they are, without a traceback, and exit with status 2.
    Programming errors (bugs) are raised as ordinary exceptions instead.
    """
