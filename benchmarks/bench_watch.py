#!/usr/bin/env python3
"""The watch daemon: event-to-verdict latency after one file change, idle CPU and memory.

    python benchmarks/bench_watch.py [FOLDER ...] [--debounce S] [--changes N] [--idle S]

It runs ``libdoctor watch FOLDER...`` as a child, moves one needed library away and back,
one change at a time (each is a regression or a recovery), and measures from the change to the event, minus
the debounce.  Then it leaves the daemon idle and reads its CPU time and RSS with psutil.
Without FOLDER it uses a copy of /usr/local/cuda-13.0/lib in a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def main() -> None:
    import compileall

    import psutil

    parser = argparse.ArgumentParser()
    parser.add_argument("folders", nargs="*")
    parser.add_argument("--debounce", type=float, default=0.2)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--idle", type=float, default=20.0)
    args = parser.parse_args()
    compileall.compile_dir(os.path.join(os.path.dirname(HERE), "libdoctor"), quiet=1)
    work = tempfile.mkdtemp(prefix="bench-watch-")
    folders = args.folders
    if not folders:
        source = "/usr/local/cuda-13.0/lib"
        shutil.copytree(source, os.path.join(work, "lib"), symlinks=True)
        folders = [os.path.join(work, "lib")]
    from libdoctor.targets import walk_folder

    notes: list[str] = []
    objects = [f for folder in folders for f in walk_folder(folder, notes)]
    needed = _needed_names(objects)
    named = [os.path.join(folder, name) for folder in folders for name in sorted(os.listdir(folder))]
    link = next((path for path in named if os.path.basename(path) in needed), None)  # a soname link or file
    if link is None:
        sys.exit("no library that another object of the tree needs: give another tree")
    aside = link + ".moved-by-bench"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE), LIBDOCTOR_STATE_DIR=os.path.join(work, "state"),
               LIBDOCTOR_CACHE_DIR=os.path.join(work, "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "libdoctor.cli", "--log-level", "info", "watch", *folders,
                             "--debounce", str(args.debounce)], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    events: list[tuple[float, dict]] = []

    def read() -> None:
        for line in proc.stderr:
            try:
                events.append((time.monotonic(), json.loads(line)))
            except ValueError:
                pass

    threading.Thread(target=read, daemon=True).start()

    def wait(name: str, since: int, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for stamp, event in events[since:]:
                if event.get("event") == name:
                    return stamp
            time.sleep(0.005)
        raise SystemExit(f"no {name} event: {events[-5:]}")

    wait("watching", 0, 120)
    latencies = []
    for i in range(args.changes):
        mark = len(events)
        start = time.monotonic()
        if i % 2 == 0:
            os.rename(link, aside)
            stamp = wait("regression", mark)
        else:
            os.rename(aside, link)
            stamp = wait("recovery", mark)
        latencies.append(stamp - start - args.debounce)
    if os.path.exists(aside):
        os.rename(aside, link)
    time.sleep(2)
    process = psutil.Process(proc.pid)
    cpu_before = sum(process.cpu_times()[:2])
    time.sleep(args.idle)
    cpu_after = sum(process.cpu_times()[:2])
    rss = process.memory_info().rss
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(work, ignore_errors=True)
    print(f"tree: {len(objects)} ELF objects in {', '.join(folders)}; moved {link}")
    print(f"event-to-verdict past the debounce: median {statistics.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms over {len(latencies)} changes (target < 300 ms)")
    print(f"idle CPU: {(cpu_after - cpu_before) / args.idle * 100:.2f}% of a core over {args.idle:.0f} s "
          f"(target < 1%)")
    print(f"RSS: {rss / 1e6:.0f} MB (target < 100 MB)")


def _needed_names(objects: list[str]) -> set[str]:
    from libdoctor.errors import ElfError
    from libdoctor.loader.elffacts import read_elf_facts

    names: set[str] = set()
    for path in objects:
        try:
            names.update(read_elf_facts(path).needed)
        except ElfError:
            pass
    return names


if __name__ == "__main__":
    main()
