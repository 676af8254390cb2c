#!/usr/bin/env python3
"""Cold and warm ``libdoctor scan`` of a tree against peers measured in the same run.

    python benchmarks/bench_scan.py [FOLDER ...] [--python ENV/bin/python] [--repeat N]

Peers: ``ldd`` and ``ldd -r`` (which also binds every symbol) run on every file (as people do),
``libtree`` and pax-utils ``lddtree`` when installed (Debian packages ``libtree`` and
``pax-utils``).  libdoctor is timed cold and warm, with and without its symbol check
(``--no-symbols``).  ``--python`` scans an environment's frameworks as ``scan --python`` does,
the peers then run on the objects that scan discovered.  Prints wall times, ratios, and the
peak RSS of the cold scan.  Nothing here is asserted: speed is reported, never tested.
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
sys.path.insert(0, os.path.dirname(HERE))

from libdoctor.targets import walk_folder  # noqa: E402


def wall(argv: list[str], env: dict | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _pid, _status, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - start, usage.ru_maxrss


def best(samples: list[float]) -> float:
    return min(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", nargs="*", default=["/usr/local/cuda-13.0/lib"])
    parser.add_argument("--python", help="scan this interpreter's environment (scan --python)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    notes: list[str] = []
    if args.python:
        from libdoctor.targets import discover, python_env

        discovery = discover((), None, python_env(None, args.python).prefix, args.python, [])
        files = sorted({t.path for t in discovery.targets if os.path.isfile(t.path)})
        where = ["--python", args.python]
    else:
        files = [f for folder in args.folders for f in walk_folder(folder, notes)]
        where = list(args.folders)
    size = sum(os.path.getsize(f) for f in files)
    print(f"tree: {len(files)} ELF objects, {size / 1e9:.2f} GB in {' '.join(where)}")
    results: dict[str, float] = {}

    ldd = shutil.which("ldd")
    for label, flags in (("ldd (every file)", []), ("ldd -r (every file)", ["-r"])):
        if not ldd:
            break
        samples = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            for path in files:
                subprocess.run([ldd, *flags, path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            samples.append(time.perf_counter() - start)
        results[label] = best(samples)
    libtree = shutil.which("libtree")
    if libtree:
        results["libtree"] = best([wall([libtree, "-p", *files])[0] for _ in range(args.repeat)])
    lddtree = shutil.which("lddtree")
    if lddtree:
        python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        results["lddtree (pax-utils)"] = best([wall([python, lddtree, *files])[0] for _ in range(args.repeat)])

    # An installed libdoctor has its bytecode compiled at install time; a source tree may not
    # (PYTHONDONTWRITEBYTECODE): compile it once so start-up is measured as users see it.
    import compileall

    compileall.compile_dir(os.path.join(os.path.dirname(HERE), "libdoctor"), quiet=1)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
    rss = 0
    for label, flags in (("", []), (" (no symbols)", ["--no-symbols"])):
        scan = [sys.executable, "-m", "libdoctor.cli", "scan", "--json", *flags, *where]
        cold, warm = [], []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as cache:
                env["LIBDOCTOR_CACHE_DIR"] = cache
                seconds, peak = wall(scan, env)
                cold.append(seconds)
                rss = max(rss, peak)
                warm.append(best([wall(scan, env)[0] for _ in range(2)]))
        results[f"libdoctor cold{label}"] = best(cold)
        results[f"libdoctor warm{label}"] = best(warm)

    from libdoctor.loader.environment import Environment
    from libdoctor.loader.factstore import FactsStore
    from libdoctor.scan import run_scan

    # The daemon's re-verification: a fresh Environment (ld.so.cache read again), then every
    # folder listing and file the last resolution read is checked; unchanged, the report stands.
    store = FactsStore()
    targets = () if args.python else tuple(args.folders)
    report = run_scan(targets, store=store, python=args.python)
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        again = run_scan(targets, env=Environment.from_process(loader=report.env.loader), store=store,
                         previous=report, python=args.python)
        samples.append(time.perf_counter() - start)
        assert again is report, "the tree changed during the benchmark"
    results["libdoctor re-verify in process"] = best(samples)

    for name, seconds in results.items():
        print(f"{name:34s} {seconds * 1000:9.1f} ms")
    print(f"{'libdoctor cold peak RSS':34s} {rss / 1024:9.1f} MB")
    cold_s = results["libdoctor cold"]
    if "ldd (every file)" in results:
        print(f"cold scan / ldd          = {cold_s / results['ldd (every file)']:.2f}  (target < 1, aim 0.5)")
        print(f"cold scan / ldd -r       = {cold_s / results['ldd -r (every file)']:.2f}  (target < 1)")
    print(f"symbols cost (cold)      = {cold_s / results['libdoctor cold (no symbols)']:.2f}x the scan without "
          "them  (target <= 2)")
    if "lddtree (pax-utils)" in results:
        print(f"lddtree / cold scan      = {results['lddtree (pax-utils)'] / cold_s:.1f}x  (target >= 4)")
    if "libtree" in results:
        print(f"cold scan / libtree      = {cold_s / results['libtree']:.1f}")
    print(f"warm scan                = {results['libdoctor warm'] * 1000:.0f} ms  (target < 250 ms)")
    print(f"re-verify in process     = {results['libdoctor re-verify in process'] * 1000:.1f} ms  (target < 20 ms)")
    print(f"peak RSS                 = {rss / 1024:.0f} MB  (target < 200 MB)")


if __name__ == "__main__":
    main()
