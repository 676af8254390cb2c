"""The ``libdoctor`` command (and ``python -m libdoctor``): a kept answer when nothing it consulted changed,
else the command line runs."""
from __future__ import annotations

import sys


def main() -> None:
    from .verdicts.store import recording, replay

    argv = sys.argv[1:]
    code = replay(argv)
    if code is not None:
        sys.exit(code)
    from .cli import main as command_line

    with recording(argv):
        command_line(prog_name="libdoctor")


if __name__ == "__main__":
    main()
