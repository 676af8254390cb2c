"""``libdoctor hook install|remove --env PREFIX``: conda activation scripts and a
``bert-serving-start`` wrapper that runs ``libdoctor preflight`` first.

The wrapper replaces the console script by moving it aside (``bert-serving-start.libdoctor-orig``)
and writing a new file in its place; both changes are journalled, and ``hook remove`` puts the
original back only while the wrapper is still what libdoctor wrote.  Nothing is lost.
"""
from __future__ import annotations

import os
import shlex
import shutil
import sys
from typing import Optional

from ..errors import LibdoctorError
from .fixer import Applier, load_journals, undo
from .statedir import ensure_private_dir, state_dir, state_lock

WRAPPED = ("bert-serving-start",)
ORIGINAL_SUFFIX = ".libdoctor-orig"
PASS_THROUGH = ("-h", "--help", "-version", "--version")  # answered by the real command, no checks first


def libdoctor_command() -> list[str]:
    """How to run this libdoctor: its console script, else this interpreter with ``-m libdoctor.cli``."""
    found = shutil.which("libdoctor")
    return [os.path.abspath(found)] if found else [sys.executable, "-m", "libdoctor.cli"]


def wrapper_text(libdoctor: list[str], prefix: str, command: str) -> str:
    original = os.path.join(prefix, "bin", command + ORIGINAL_SUFFIX)
    direct = " ".join(shlex.quote(w) for w in launch_words(original))
    return (f"#!/bin/sh\n# written by libdoctor: `libdoctor hook remove` removes it\n"
            f"for arg in \"$@\"; do case \"$arg\" in {'|'.join(PASS_THROUGH)}) exec {direct} \"$@\";; esac; done\n"
            f"exec {shlex.join(libdoctor)} preflight --env {shlex.quote(prefix)} --profile bert-serving -- "
            f"{shlex.quote(original)} \"$@\"\n")


def shown_name(command: str) -> str:
    """A command's name as its user knows it, never the name the hook moved the original to."""
    name = os.path.basename(command)
    return name[: -len(ORIGINAL_SUFFIX)] if name.endswith(ORIGINAL_SUFFIX) else name


# runpy.run_path would put the file's own path back into argv[0]: the script is compiled and run by hand.
RUN_AS = ("import sys; shown, path = sys.argv[1:3]; sys.argv = [shown] + sys.argv[3:]; "
          "code = compile(open(path, 'rb').read(), path, 'exec'); "
          "exec(code, {'__name__': '__main__', '__file__': path, '__builtins__': __builtins__})")


def launch_words(path: str) -> list[str]:
    """How to start a (possibly moved-aside) command so that it sees its own name in ``argv[0]``: a Python
    console script through its interpreter (argparse's usage lines then say ``bert-serving-start``)."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(512).decode("utf-8", "replace")
    except OSError:
        return [path]
    interpreter = first[2:].strip().split()[0] if first.startswith("#!") and first[2:].strip() else ""
    if "python" not in os.path.basename(interpreter):
        return [path]
    return [interpreter, "-c", RUN_AS, shown_name(path), path]


def install_hook(prefix: str, libdoctor: list[str], root: Optional[str] = None) -> list[str]:
    prefix = os.path.abspath(prefix)
    root = root or state_dir()
    if not os.path.isdir(os.path.join(prefix, "bin")):
        raise LibdoctorError(f"{prefix}: not an environment (no bin/ folder)")
    with state_lock(root):
        applier = Applier(root, prefix, in_place=False)
        applier.journal.data["hook"] = True
        ensure_private_dir(os.path.join(root, "journal"))
        applier.journal.save()
        applier.write_activation()
        for command in WRAPPED:
            path = os.path.join(prefix, "bin", command)
            if os.path.exists(path + ORIGINAL_SUFFIX):
                applier.outcome.kept.append(path)
                continue
            if os.path.exists(path):
                applier.rename(path, path + ORIGINAL_SUFFIX)
                applier.write_file(path, wrapper_text(libdoctor, prefix, command), mode=0o755)
        outcome = applier.close()
    return [f"created {c}" for c in outcome.created] + [f"already present {k}" for k in outcome.kept] + [
        f"left alone: {r}" for r in outcome.refused]


def remove_hook(prefix: str, root: Optional[str] = None) -> list[str]:
    prefix = os.path.abspath(prefix)
    root = root or state_dir()
    lines: list[str] = []
    with state_lock(root):
        for journal in load_journals(root):
            if journal.get("hook") and journal.get("env") == prefix:
                lines += undo(root, journal["run_id"])
    return lines or ["no hook installed for " + prefix]
