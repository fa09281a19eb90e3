"""The one exception type for user-facing problems: the CLI prints its message as a
single line (what is wrong and how to fix it) instead of a traceback."""


class UserError(Exception):
    """Bad input: a file, a config value, a path, a server. The message names the fix."""
