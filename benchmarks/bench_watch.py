#!/usr/bin/env python3
"""The watch daemon: event-to-verdict latency after one file change, idle CPU and memory.

    python benchmarks/bench_watch.py [FOLDER ...] [--debounce S] [--changes N] [--idle S]

It runs ``libdoctor watch FOLDER...`` as a child, moves one needed library away and back,
one change at a time (each is a regression or a recovery), and measures from the change to the event, minus
the debounce: first for the library the fewest objects need (one changed library: the daemon resolves
again only the loads it touched), then for the one the most objects need (every load touched).  Then it
leaves the daemon idle and reads its CPU time and RSS with psutil.  Target (issue 20): event to verdict at
most 50 ms past the debounce for one changed library, RSS at most 60 MB.
Without FOLDER it builds a healthy tree with gcc (24 libraries, each needing the next).
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
        folders = [_built_tree(os.path.join(work, "lib"))]
    from libdoctor.targets import walk_folder

    notes: list[str] = []
    objects = [f for folder in folders for f in walk_folder(folder, notes)]
    needed = _needed_names(objects)
    named = [os.path.join(folder, name) for folder in folders for name in sorted(os.listdir(folder))]
    libraries = sorted((needed[os.path.basename(p)], p) for p in named if os.path.basename(p) in needed)
    if not libraries:
        sys.exit("no library that another object of the tree needs: give another tree")
    picks = [("one changed library (needed by the fewest)", libraries[0][1])]
    if libraries[-1][0] > libraries[0][0]:
        picks.append(("the library needed by the most", libraries[-1][1]))
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
    measured = []
    for label, link in picks:
        mark_all = len(events)
        aside = link + ".moved-by-bench"
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
        verified = [e.get("seconds", 0) for _t, e in events[mark_all:] if e.get("event") == "verified"]
        measured.append((label, link, latencies, verified))
        time.sleep(2 * args.debounce + 0.5)  # the move back settles before the next library is moved
    time.sleep(2)
    process = psutil.Process(proc.pid)
    cpu_before = sum(process.cpu_times()[:2])
    time.sleep(args.idle)
    cpu_after = sum(process.cpu_times()[:2])
    rss = process.memory_info().rss
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(work, ignore_errors=True)
    print(f"tree: {len(objects)} ELF objects in {', '.join(folders)}")
    for label, link, latencies, verified in measured:
        print(f"{label}: {os.path.basename(link)} (needed by {needed[os.path.basename(link)]}): event-to-verdict "
              f"past the debounce median {statistics.median(latencies) * 1000:.0f} ms, max "
              f"{max(latencies) * 1000:.0f} ms over {len(latencies)} changes; the daemon's own verification "
              f"median {statistics.median(verified or [0]) * 1000:.0f} ms")
    print(f"idle CPU: {(cpu_after - cpu_before) / args.idle * 100:.2f}% of a core over {args.idle:.0f} s "
          f"(target < 1%)")
    print(f"RSS: {rss / 1e6:.0f} MB (target <= 60 MB)")


def _built_tree(folder: str, count: int = 24) -> str:
    """A healthy tree built with gcc: ``libk{i}.so.1`` each needing the next (a chain), beside a library that
    needs them all."""
    os.makedirs(folder)
    source = os.path.join(folder, "k.c")
    for index in reversed(range(count)):
        with open(source, "w") as handle:
            handle.write(f"int k{index + 1}(void);\nint k{index}(void) {{ return "
                         f"{'k%d() + ' % (index + 1) if index + 1 < count else ''}1; }}\n")
        link = [f"-L{folder}", f"-lk{index + 1}"] if index + 1 < count else []
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", os.path.join(folder, f"libk{index}.so.1"), source,
                        f"-Wl,-soname,libk{index}.so.1", "-Wl,-rpath,$ORIGIN", *link], check=True)
        os.symlink(f"libk{index}.so.1", os.path.join(folder, f"libk{index}.so"))
    os.remove(source)
    for index in range(count):
        os.remove(os.path.join(folder, f"libk{index}.so"))  # the link-time names: only the sonames stay
    return folder


def _needed_names(objects: list[str]) -> dict[str, int]:
    """Each DT_NEEDED name of the tree, with how many objects need it."""
    from libdoctor.errors import ElfError
    from libdoctor.loader.elffacts import read_elf_facts

    names: dict[str, int] = {}
    for path in objects:
        try:
            for name in set(read_elf_facts(path).needed):
                names[name] = names.get(name, 0) + 1
        except ElfError:
            pass
    return names


if __name__ == "__main__":
    main()
