class UserError(Exception):
    """A problem the user can fix (bad option, missing data or model): printed as one line, exit code 2."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (at most `limit` characters), else its type's name: what
    a one-line error can quote of it."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(error).__name__


def describe(error: BaseException, limit: int = 200) -> str:
    """`Type: first line` of an exception (the type alone when it has no message)."""
    line = first_line(error, limit)
    return line if line == type(error).__name__ else f"{type(error).__name__}: {line}"
