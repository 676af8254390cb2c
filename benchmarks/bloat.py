#!/usr/bin/env python3
"""Crafted libraries that once ballooned libdoctor, and what a scan of each costs now (peak RSS, time,
facts-cache size), next to ``ld.so --list`` on the same file.

    python benchmarks/bloat.py [--work DIR]

* ``same-name-4000``: 4,000 DT_NEEDED entries naming one 65,000-byte string (146 KB);
* ``same-name-262000``: 262,000 such entries (4 MB);
* ``distinct-100000``: 100,000 distinct short names;
* ``same-name-16mb``: a 16 MB file of 1,000,000 entries.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ = 0, 1, 5, 10


def craft(path: Path, names: list[bytes], entries: int) -> Path:
    """A minimal x86_64 ET_DYN: one RW PT_LOAD over the whole file, PT_DYNAMIC with ``entries`` DT_NEEDED
    (cycling through ``names``), DT_STRTAB, DT_NULL."""
    strtab = b"\0" + b"".join(n + b"\0" for n in names)
    offsets, at = [], 1
    for name in names:
        offsets.append(at)
        at += len(name) + 1
    header_size, phsize = 64, 56 * 2
    dyn_at = header_size + phsize
    dynamic = b"".join(struct.pack("<qQ", DT_NEEDED, offsets[i % len(offsets)]) for i in range(entries))
    str_at = dyn_at + len(dynamic) + 16 * 3
    dynamic += struct.pack("<qQ", DT_STRTAB, str_at) + struct.pack("<qQ", DT_STRSZ, len(strtab))
    dynamic += struct.pack("<qQ", DT_NULL, 0)
    size = str_at + len(strtab)
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 64, 0, 0, 64, 56, 2, 64, 0, 0)
    load = struct.pack("<IIQQQQQQ", 1, 6, 0, 0, 0, size, size, 0x1000)
    dyn = struct.pack("<IIQQQQQQ", 2, 6, dyn_at, dyn_at, dyn_at, len(dynamic), len(dynamic), 8)
    path.write_bytes(ehdr + load + dyn + dynamic + strtab)
    return path


CASES = {
    "same-name-4000": lambda p: craft(p, [b"x" * 65000], 4000),
    "same-name-262000": lambda p: craft(p, [b"x" * 65000], 262000),
    "distinct-100000": lambda p: craft(p, [b"lib%06d.so" % i for i in range(100000)], 100000),
    "same-name-16mb": lambda p: craft(p, [b"libbloat.so"], 1000000),
}

CHILD = r"""
import json, resource, sys, time  # peak RSS of this process alone: measured by /usr/bin/time where present
from libdoctor.cli import main
started = time.perf_counter()
try:
    main(["scan", "--json", sys.argv[1]], standalone_mode=False)
except SystemExit:
    pass
sys.stderr.write("\n" + json.dumps({"s": time.perf_counter() - started,
                             "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}) + "\n")
"""


def measure(path: Path, cache: str) -> dict:
    env = {**os.environ, "LIBDOCTOR_CACHE_DIR": cache}
    timer = ["/usr/bin/time", "-f", "TIME %M"] if os.path.exists("/usr/bin/time") else []
    done = subprocess.run(timer + [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, env=env,
                          cwd=path.parent, timeout=600)
    stats = json.loads(next(line for line in reversed(done.stderr.splitlines()) if line.startswith('{"s"')))
    peak = next((line.split()[1] for line in done.stderr.splitlines() if line.startswith("TIME ")), None)
    if peak is not None:
        stats["rss_mb"] = int(peak) / 1024
    try:
        report = json.loads(done.stdout)
        verdict = report["verdict"]
    except ValueError:
        verdict = done.stdout[:200]
    return {"seconds": round(stats["s"], 2), "peak_rss_mb": round(stats["rss_mb"], 1), "verdict": verdict}


def loader(path: Path) -> str:
    started = time.perf_counter()
    done = subprocess.run(["/lib64/ld-linux-x86-64.so.2", "--list", str(path)], capture_output=True, text=True,
                          errors="replace", timeout=600)
    tail = (done.stderr or done.stdout).strip().splitlines()
    return f"exit {done.returncode} in {time.perf_counter() - started:.2f} s: {(tail[-1] if tail else '')[:90]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        work = Path(args.work or temp)
        work.mkdir(parents=True, exist_ok=True)
        for name, make in CASES.items():
            path = make(work / f"{name}.so")
            cache = str(work / f"cache-{name}")
            cold = measure(path, cache)
            warm = measure(path, cache)
            cached = sum(f.stat().st_size for f in Path(cache).glob("*") if f.is_file())
            print(f"{name}: {path.stat().st_size >> 10} KB file; cold {cold['seconds']} s, {cold['peak_rss_mb']} MB; "
                  f"warm {warm['seconds']} s, {warm['peak_rss_mb']} MB; facts cache {cached >> 10} KB; "
                  f"verdict: {cold['verdict'][:100]}")
            print(f"    ld.so --list: {loader(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
