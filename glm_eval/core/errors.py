class UserError(Exception):
    """A problem the user can fix (bad option, missing data or model): printed as one line, exit code 2."""
