#!/usr/bin/env python3
"""Cold and warm ``libdoctor scan`` against peers measured in the same run (issue 20's targets).

    python benchmarks/bench_scan.py --python /tmp/torchcuda/bin/python --python /tmp/tfvenv/bin/python
    python benchmarks/bench_scan.py [FOLDER ...] [--repeat N]

Measured, every figure the best of ``--repeat`` runs, CPU seconds (user + system, children included) as
the ratios' unit so that a busy machine inflates both sides alike:
- the floor: the same Python starting and importing click;
- each ``--python`` environment's warm ``libdoctor scan --python`` (a kept answer replayed; target at
  most 0.12 s wall and at most 2x the floor's CPU), and the same with the kept answers off (every
  load resolved again from the facts cache);
- the ELF files of the first environment (or of FOLDERs) as targets: warm against ``libtree`` warm
  (target at most 5x), and cold (an empty cache: symbols and dlopen strings on) against ``ldd`` and
  ``ldd -r`` run on every file as people do (target at most 0.6x ``ldd``, below ``ldd -r``);
- the peak RSS of every libdoctor run (target at most 60 MB).
Nothing here is asserted: speed is reported, never tested.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)


class Sample:
    def __init__(self, wall: float, cpu: float, rss_kib: int) -> None:
        self.wall, self.cpu, self.rss_kib = wall, cpu, rss_kib


def run(argv: list[str], env: dict | None = None) -> Sample:
    """Wall and CPU seconds and peak RSS of one command (``wait4``: the process and the children it waited
    for, as ``ldd``'s loader)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _pid, _status, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0  # reaped here
    return Sample(time.perf_counter() - start, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)


def best(samples: list[Sample]) -> Sample:
    return Sample(min(s.wall for s in samples), min(s.cpu for s in samples), max(s.rss_kib for s in samples))


def repeat(argv: list[str], times: int, env: dict | None = None, warm_up: bool = True) -> Sample:
    if warm_up:
        run(argv, env)
    return best([run(argv, env) for _ in range(times)])


def each_file(tool: list[str], files: list[str]) -> Sample:
    """``tool FILE`` once per file, as people run ldd: the sums."""
    samples = [run(tool + [path]) for path in files]
    return Sample(sum(s.wall for s in samples), sum(s.cpu for s in samples), 0)


def line(label: str, sample: Sample, note: str = "") -> None:
    print(f"{label:52s} {sample.wall * 1000:8.0f} ms wall {sample.cpu * 1000:8.0f} ms CPU  {note}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", nargs="*")
    parser.add_argument("--python", action="append", default=[], help="an environment's interpreter (repeatable)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    import compileall

    compileall.compile_dir(os.path.join(REPO, "libdoctor"), quiet=1)  # bytecode as an installed copy has it
    work = tempfile.mkdtemp(prefix="bench-scan-")
    env = dict(os.environ, PYTHONPATH=REPO, LIBDOCTOR_CACHE_DIR=os.path.join(work, "cache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    libdoctor = [sys.executable, "-m", "libdoctor"]
    rss = 0

    floor = repeat([sys.executable, "-c", "import click"], args.repeat, env)
    line("python + import click (the floor)", floor)
    for python in args.python:
        warm = repeat(libdoctor + ["scan", "--python", python], args.repeat, env)
        rss = max(rss, warm.rss_kib)
        line(f"warm scan --python {python}", warm,
             f"{warm.cpu / floor.cpu:.1f}x the floor's CPU (target <= 2), wall target <= 120 ms")
        resolved = repeat(libdoctor + ["scan", "--python", python], args.repeat,
                          dict(env, LIBDOCTOR_NO_VERDICT_CACHE="1"))
        rss = max(rss, resolved.rss_kib)
        line("  the same, kept answers off (every load resolved)", resolved)

    files = _files(args)
    if not files:
        return
    size = sum(os.path.getsize(f) for f in files)
    print(f"tree: {len(files)} ELF objects, {size / 1e9:.2f} GB")
    scan = libdoctor + ["scan", "--json", *files]
    warm = repeat(scan, args.repeat, env)
    rss = max(rss, warm.rss_kib)
    libtree = shutil.which("libtree")
    if libtree:
        peer = repeat([libtree, "-p", *files], args.repeat)
        line("libtree warm", peer)
        line("libdoctor warm over the files", warm, f"{warm.cpu / peer.cpu:.1f}x libtree's CPU (target <= 5)")
    else:
        line("libdoctor warm over the files", warm, "(libtree not installed: Debian package libtree)")
    colds = []
    for index in range(max(1, args.repeat // 2)):
        cold_env = dict(env, LIBDOCTOR_CACHE_DIR=os.path.join(work, f"cold{index}"))
        colds.append(run(scan, cold_env))
    cold = best(colds)
    rss = max(rss, cold.rss_kib)
    ldd = shutil.which("ldd")
    if ldd:
        plain = each_file([ldd], files)
        relocating = each_file([ldd, "-r"], files)
        line("ldd, every file", plain)
        line("ldd -r, every file", relocating)
        line("libdoctor cold (symbols and dlopen strings on)", cold,
             f"{cold.cpu / plain.cpu:.2f}x ldd (target <= 0.6), {cold.cpu / relocating.cpu:.2f}x ldd -r (target < 1)")
    else:
        line("libdoctor cold (symbols and dlopen strings on)", cold)
    print(f"{'peak RSS of the libdoctor runs':52s} {rss / 1024:8.0f} MB (target <= 60 MB)")
    shutil.rmtree(work, ignore_errors=True)


def _files(args: argparse.Namespace) -> list[str]:
    from libdoctor.targets import python_env, walk_folder

    notes: list[str] = []
    folders = list(args.folders)
    if args.python and not folders:  # every ELF object the first environment installed (torch's: about 120)
        environment = python_env(None, args.python[0])
        folders = sorted({os.path.realpath(p) for p in environment.site_packages if os.path.isdir(p)})
    return [f for folder in folders for f in walk_folder(folder, notes)]


if __name__ == "__main__":
    main()
