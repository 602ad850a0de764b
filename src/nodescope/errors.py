"""The one exception type for mistakes a user can fix (spec, data, paths, devices)."""


class UserError(Exception):
    """A problem the user caused and can fix; the CLI prints it as one line, no traceback."""
