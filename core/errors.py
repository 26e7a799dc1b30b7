"""Errors a user can fix. The command line prints them as one line and exits 2."""


class UserError(Exception):
    """Bad input: the message names the problem and the fix, in one line."""
