#!/usr/bin/env python3
"""README's example, made and run for real: the field report's machine, then libdoctor on it.

    python docs/example.py            # print the transcript
    python docs/example.py --write    # put it into README.rst (between the example markers)
    python docs/example.py --check    # exit 1 when README.rst's example is not what a real run prints

The machine is the tests' own (``tests/test_impostor.py``): CUDA 10.0 and 11.0 trees, cuDNN 8 in
/usr/lib64 and the field report's hand-made links (``libcudnn.so.7 -> libcudnn.so``, cuDNN 8), a
tensorflow-gpu 1.14 conda env whose ``activate.d/cuda.sh`` puts CUDA 10.0 first, the genuine cuDNN
7.6.5 in /opt, no driver.  It is built in ``/tmp/field`` (made anew each time; a /tmp/field that is
not the example's own is refused), libdoctor's state and caches beside it; the transcript shows each
run's id as ``RUN-ID``, the one thing that differs between runs.  Needs gcc.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.conftest import ElfFactory  # noqa: E402
from tests.test_impostor import build_machine, conda_env_with_activation  # noqa: E402

FIELD = Path("/tmp/field")
MARKER = ".libdoctor-example"  # a /tmp/field without it is someone else's: never removed
START, END = ".. example: start (docs/example.py --write)", ".. example: end"
COMMANDS = ("libdoctor scan --env envs/bert --look-in opt/cudnn-7.6/lib64",
            "libdoctor fix --apply --yes --env envs/bert --look-in opt/cudnn-7.6/lib64",
            "libdoctor scan --env envs/bert -q",
            "libdoctor undo --all")
RUN_ID = re.compile(r"\b\d{8}T\d{6}(?:\.\d+)?Z?[-\w]*\b")


def build(root: Path = FIELD) -> Path:
    """The machine at ``root`` (the folder the commands run in), made anew."""
    if root.exists() or root.is_symlink():
        if not (root / MARKER).is_file():
            raise SystemExit(f"{root} exists and is not the example's own: move it away first")
        shutil.rmtree(root)
    root.mkdir()
    (root / MARKER).write_text("made by docs/example.py; removed and made again by it\n")
    elf = ElfFactory(root / ".build")
    build_machine(elf, root, root)
    elf.lib(root / "opt/cudnn-7.6/lib64/libcudnn.so.7.6.5", soname="libcudnn.so.7", defines=["cudnnCreate"])
    conda_env_with_activation(elf, root / "envs", root)
    return root


def environment(root: Path) -> dict[str, str]:
    sysroot = root / ".sysroot"  # no GPU, no driver: the machine facts come from an empty root
    sysroot.mkdir(exist_ok=True)
    return {"PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin", "HOME": str(root / ".home"),
            "NO_COLOR": "1", "LIBDOCTOR_SYSROOT": str(sysroot), "LIBDOCTOR_STATE_DIR": str(root / ".state"),
            "LIBDOCTOR_CACHE_DIR": str(root / ".cache"), "LIBDOCTOR_NO_VERDICT_CACHE": "1",
            "PYTHONPATH": str(REPO), "LANG": "C.UTF-8"}


def transcript(root: Path) -> str:
    """Each command as typed, what it printed, and its exit status, as one literal block's lines."""
    lines = []
    for command in COMMANDS:
        argv = [sys.executable, "-m", "libdoctor", *shlex.split(command)[1:]]
        done = subprocess.run(argv, cwd=root, env=environment(root), capture_output=True, text=True, timeout=300)
        lines.append(f"$ {command}")
        lines += done.stdout.rstrip("\n").splitlines()
        lines.append(f"(exit status {done.returncode})")
        lines.append("")
    return RUN_ID.sub("RUN-ID", "\n".join(lines).rstrip("\n") + "\n")


def literal_block(text: str) -> str:
    return "::\n\n" + "".join(f"    {line}\n" if line else "\n" for line in text.splitlines())


def readme_block(readme: str) -> str:
    start, end = readme.index(START) + len(START), readme.index(END)
    return readme[start:end].strip("\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    root = build()
    try:
        block = literal_block(transcript(root))
    finally:
        shutil.rmtree(root)
    readme_path = REPO / "README.rst"
    readme = readme_path.read_text(encoding="utf-8")
    if args.check:
        if readme_block(readme) != block.strip("\n"):
            print("README.rst's example differs from a real run: python docs/example.py --write", file=sys.stderr)
            return 1
        return 0
    if args.write:
        start, end = readme.index(START) + len(START), readme.index(END)
        readme_path.write_text(readme[:start] + "\n\n" + block + "\n" + readme[end:], encoding="utf-8")
        return 0
    print(block, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
