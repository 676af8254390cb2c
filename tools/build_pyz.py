#!/usr/bin/env python3
"""Build ``dist/libdoctor.pyz``: libdoctor and its dependencies in one file, run by any Python 3.9 or newer.

    python3 tools/build_pyz.py [--output dist/libdoctor.pyz] [--platform manylinux2014_x86_64]

The dependencies (setup.cfg's install_requires) are fetched by pip as wheels for Python 3.9 on this machine's
platform; pure-Python ones are imported from the archive itself, and the few with compiled parts (psutil's
abi3 module) are unpacked once into ``$XDG_CACHE_HOME/libdoctor/pyz/<digest>/`` on first use, since Python
cannot import a compiled module out of a zip file.  The archive's ``__main__`` is kept to Python 3.6's syntax, so
CentOS 7's python3 is turned away with one line rather than a SyntaxError.
"""
from __future__ import annotations

import argparse
import configparser
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipapp
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NATIVE = "_native"

BOOTSTRAP = '''\
# libdoctor.pyz: made by tools/build_pyz.py.  Kept to Python 3.6's syntax (the check below must run there).
import sys

if sys.version_info < (3, 9):
    sys.exit("libdoctor needs Python 3.9 or newer (this is %d.%d): on CentOS/RHEL 7 run this file with conda's "
             "python, or any Python 3.9+" % sys.version_info[:2])


def _native_path():
    """The archive's compiled modules, unpacked once per archive content into the user's cache folder."""
    import hashlib
    import os
    import zipfile

    archive = os.path.dirname(os.path.abspath(__file__))
    with zipfile.ZipFile(archive) as bundle:
        members = [m for m in bundle.infolist() if m.filename.startswith("_native/") and not m.is_dir()]
        if not members:
            return None
        digest = hashlib.sha256(repr([(m.filename, m.CRC, m.file_size) for m in members]).encode()).hexdigest()
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        target = os.path.join(base, "libdoctor", "pyz", digest[:16])
        if not os.path.isdir(target):
            staging = target + ".%d.tmp" % os.getpid()
            for member in members:
                bundle.extract(member, staging)
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            try:
                os.rename(os.path.join(staging, "_native"), target)  # atomic: another run may race us
            except OSError:
                pass
            import shutil
            shutil.rmtree(staging, ignore_errors=True)
        return target


_native = _native_path()
if _native:
    sys.path.insert(1, _native)

from libdoctor.__main__ import main  # noqa: E402

main()
'''


def requirements() -> list[str]:
    """setup.cfg's install_requires without their markers: the archive serves every Python from 3.9 on, so a
    dependency only older ones need (tomli before 3.11) is bundled too; pip would judge the marker by the Python
    that runs the build."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    return [line.split(";", 1)[0].strip() for line in lines if line.strip()]


def version() -> str:
    """The installed checkout's version (setuptools-scm wrote it), else the package's own fallback."""
    sys.path.insert(0, str(REPO))
    import libdoctor

    return libdoctor.__version__


def fetch(requirements_: list[str], target: Path, platform_tag: str) -> None:
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--target", str(target),
               "--only-binary", ":all:", "--python-version", "3.9", "--implementation", "cp",
               "--platform", platform_tag, "--platform", platform_tag.replace("manylinux2014", "manylinux_2_17"),
               *requirements_]
    subprocess.run(command, check=True)


def stage(folder: Path, platform_tag: str) -> None:
    package = folder / "libdoctor"
    shutil.copytree(REPO / "libdoctor", package, symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_version.py"))
    (package / "_version.py").write_text(f"__version__ = version = {version()!r}\n")
    deps = folder / ".deps"
    fetch(requirements(), deps, platform_tag)
    native = folder / NATIVE
    for entry in sorted(deps.iterdir()):
        if entry.name.endswith(".dist-info") or entry.name == "bin":
            continue
        compiled = entry.is_dir() and any(entry.rglob("*.so")) or entry.suffix == ".so"
        destination = (native if compiled else folder) / entry.name
        destination.parent.mkdir(exist_ok=True)
        shutil.move(str(entry), destination)
    shutil.rmtree(deps)
    (folder / "__main__.py").write_text(BOOTSTRAP)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(REPO / "dist/libdoctor.pyz"))
    parser.add_argument("--platform", default=f"manylinux2014_{platform.machine()}",
                        help="the wheels' platform tag (default: this machine's)")
    args = parser.parse_args()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="libdoctor-pyz-") as folder:
        stage(Path(folder), args.platform)
        zipapp.create_archive(folder, output.with_suffix(".pyz.tmp"), interpreter="/usr/bin/env python3",
                              compressed=True)
    os.replace(output.with_suffix(".pyz.tmp"), output)
    print(f"wrote {output} ({output.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
