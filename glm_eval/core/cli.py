"""The argument convention of every secondary command (compare, report, rescore, serve, convert): positional
paths, then `key=value` options as in the main command. Bad input is one line on stderr and exit code 2."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from glm_eval.core import log
from glm_eval.core.errors import UserError


Parse = Callable[[str], object]  # an option's value from its text; raises ValueError naming what is valid


def whole_number(text: str) -> int:
    if not text.isdigit():
        raise ValueError("must be a whole number")
    return int(text)


def port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError("must be a port number from 1 to 65535")
    return int(text)


def boolean(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError("must be true or false")
    return text.lower() == "true"


def one_of(*values: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in values:
            raise ValueError(f"must be one of {', '.join(values)}")
        return text
    return parse


def parse_args(argv: list[str], usage: str, options: dict[str, Parse], paths: tuple[int, int | None] = (1, None),
               passthrough: bool = False) -> tuple[list[str], dict[str, object], list[str]]:
    """(paths, options, other key=value arguments). An argument naming an existing path is a path even with "=" in
    it. `paths` bounds how many positionals there must be; `passthrough` keeps unknown keys (Hydra overrides)."""
    options = {**options, "verbose": boolean}  # log what happens besides warnings (`run` sets it up)
    positional, chosen, rest = [], {}, []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or Path(arg).exists():
            positional.append(arg)
        elif key in options:
            try:
                chosen[key] = options[key](value)
            except ValueError as e:
                raise UserError(f"{key}={value}: {e}") from None
        elif passthrough:
            rest.append(arg)
        else:
            raise UserError(f"unknown option '{key}'; options are: {', '.join(options)}")
    low, high = paths
    if len(positional) < low or (high is not None and len(positional) > high):
        raise UserError(usage)
    return positional, chosen, rest


def run(main: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """Run a command's main: UserError is one line and exit code 2."""
    argv = sys.argv[1:] if argv is None else argv
    log.setup(verbose="verbose=true" in argv)
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
