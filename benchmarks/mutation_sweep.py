#!/usr/bin/env python3
"""Seeded mutations of real and gcc-built libraries, each judged by libdoctor and by ``ld.so --list``.

    python benchmarks/mutation_sweep.py [--cases 5000] [--seed 1] [--show 20] [--bind]

Each case writes one mutated file as ``libmut.so``, the DT_NEEDED of a tiny gcc-built root library
(RUNPATH ``$ORIGIN``), and asks both whether the root loads: the loader (``ld.so --list`` in a
subprocess, 10 s limit; a crash by signal is a failure) and libdoctor (``Resolver.load`` of the same
root).  Mutations: byte flips biased to the ELF and program headers, the dynamic segment and the
version tables, plus truncations.  Prints the agreement, the hangs, the tracebacks and the
disagreements by kind.  Not a timing.  ``--bind`` judges as ``ldd -r`` does: the loader started on the root with
``LD_TRACE_LOADED_OBJECTS=1 LD_BIND_NOW=yes LD_WARN=yes`` (every symbol and version bound, each failure printed),
libdoctor with
its symbol binding (``unbound_symbols``), every version problem and its relocation model (``relocation_error``).
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from libdoctor.loader.environment import Environment  # noqa: E402
from libdoctor.loader.factstore import FactsStore  # noqa: E402
from libdoctor.loader.loaderinfo import LoaderInfo, probe_loader  # noqa: E402
from libdoctor.loader.binding import unbound_symbols  # noqa: E402
from libdoctor.loader.relocation import relocation_error  # noqa: E402
from libdoctor.loader.resolver import MODE_LIST, LoadResult, Resolver  # noqa: E402

GCC = shutil.which("gcc") or "cc"
SEED_SYSTEM = ("/usr/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libffi.so.8",
               "/usr/lib/x86_64-linux-gnu/libuuid.so.1")


def _gcc(out: Path, source: str, *flags: str) -> Path:
    src = out.with_suffix(".c")
    src.write_text(source)
    subprocess.run([GCC, "-o", str(out), str(src), *flags], check=True, capture_output=True)
    return out


def build_seeds(folder: Path) -> list[Path]:
    """gcc-built seeds (version script, Verneed on glibc, RUNPATH, a PIE) and a few real system libraries."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "v.map").write_text("VERS_1 { global: f; local: *; };\n")
    seeds = [
        _gcc(folder / "plain.so", "int f(void) { return 1; }\n", "-shared", "-fPIC"),
        _gcc(folder / "versioned.so",
             "#include <string.h>\nint f(char *d, const char *s) { return (int) strlen(strcpy(d, s)); }\n",
             "-shared", "-fPIC", f"-Wl,--version-script={folder / 'v.map'}", "-Wl,-soname,libmut.so",
             "-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN/sub"),
        _gcc(folder / "needs.so", "#include <math.h>\ndouble f(double x) { return cos(x); }\n", "-shared", "-fPIC",
             "-lm", "-Wl,--disable-new-dtags", "-Wl,-rpath,/nonexistent"),
        _gcc(folder / "pie", "int main(void) { return 0; }\n", "-pie", "-fPIE"),
    ]
    seeds += [Path(p) for p in SEED_SYSTEM if os.path.isfile(p)]
    return seeds


def regions(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of the bytes the loader reads first: headers, program headers, dynamic segment, notes."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2:
        return [(0, min(len(data), 4096))]
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    spans = [(0, 64), (phoff, phoff + phentsize * phnum)]
    for i in range(phnum):
        base = phoff + i * phentsize
        if base + 56 > len(data):
            break
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", data, base)
        if p_type == 2:  # PT_DYNAMIC
            spans.append((p_offset, p_offset + p_filesz))
        elif p_type == 1 and p_offset == 0:  # the first PT_LOAD holds .dynstr, .gnu.version_r
            spans.append((0, min(p_filesz, 8192)))
    return [(a, min(b, len(data))) for a, b in spans if a < min(b, len(data))]


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    if rng.random() < 0.2:
        cut = rng.randrange(1, len(data))
        return data[:cut], "truncate"
    out = bytearray(data)
    spans = regions(data)
    for _ in range(rng.choice((1, 1, 1, 2, 4))):
        start, end = rng.choice(spans) if rng.random() < 0.9 else (0, len(data))
        pos = rng.randrange(start, end)
        if rng.random() < 0.5:
            out[pos] ^= 1 << rng.randrange(8)
        else:
            out[pos] = rng.choice((0, 0xFF, rng.randrange(256)))
    return bytes(out), "flip"


@dataclass
class Case:
    loader_ok: bool
    loader_says: str
    mine_ok: bool
    mine_says: str


def loader_verdict(info: LoaderInfo, root: Path, env: dict, bind: bool = False) -> tuple[bool, str]:
    try:
        argv = [info.interpreter, str(root)] if bind else [info.interpreter, "--list", str(root)]
        done = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=10, env=env,
                              cwd=str(root.parent))
    except subprocess.TimeoutExpired:
        return False, "timeout"
    if done.returncode < 0:
        return False, f"signal {-done.returncode}"
    text = done.stdout + done.stderr
    bad = done.returncode != 0 or "not found" in text or "error while loading" in text
    if bind:
        bad = bad or "undefined symbol" in text or "symbol lookup error" in text or "relocation error" in text
    lines = [line.strip().split("shared libraries: ", 1)[-1] for line in text.splitlines()
             if "error" in line or "not found" in line or (bind and "undefined symbol" in line)]
    return not bad, (lines[0] if lines else f"exit {done.returncode}")


def my_verdict(result: LoadResult, bind: bool = False) -> tuple[bool, str]:
    if result.root_error:
        return False, result.root_error
    fatal = [r for r in result.resolutions if r.fatal or (not r.found and r.error)]
    if result.missing:
        first = result.missing[0]
        return False, f"{first.name}: {first.error or 'not found'}"
    if fatal:
        return False, f"{fatal[0].name}: {fatal[0].error}"
    if any(v.fatal and (bind or not v.missing_verdef) for v in result.version_problems):  # --list only warns
        return False, "version"
    if bind:
        paths = [o.path for o in result.objects]
        unbound = unbound_symbols(paths, paths)
        if unbound:
            return False, unbound[0].message
        for path in paths:
            error = relocation_error(path)
            if error:
                return False, error
    return True, "ok"


def bound_roots(seeds: list[Path], case_dir: Path) -> dict[int, tuple[Path, str]]:
    """For ``--bind``: per seed, a root linked against the seed itself and calling a function it exports (with
    its version node, where it has one), and the name the mutated copy must take (the seed's soname).  A seed
    that exports nothing (the PIE) keeps the plain root."""
    from libdoctor.loader.elffacts import read_elf_facts
    from libdoctor.loader.symbols import read_symbols

    roots: dict[int, tuple[Path, str]] = {}
    for index, seed in enumerate(seeds):
        try:
            facts, table = read_elf_facts(str(seed)), read_symbols(str(seed))
        except Exception:  # noqa: BLE001 - a seed that cannot be read gets the plain root
            continue
        names = sorted(n for n in table.defined_names if n[:1].isalpha() and not n.startswith(("_", "PL_")))
        if facts.is_executable or not names:
            continue
        name = facts.soname or seed.name
        folder = case_dir / f"bound{index}"
        folder.mkdir(exist_ok=True)
        shutil.copy(seed, folder / name)
        for symbol in names[:20]:  # the first that links as a call (a builtin's name would not)
            try:
                root = _gcc(folder / "libroot.so", f"int {symbol}();\nint g(void) {{ return {symbol}(); }}\n",
                            "-shared", "-fPIC", "-fno-builtin", str(folder / name), "-Wl,--enable-new-dtags",
                            "-Wl,-rpath,$ORIGIN")
            except subprocess.CalledProcessError:
                continue
            roots[index] = (root, name)
            break
    return roots


def sweep(cases: int, seed: int, work: Path, show: int = 0, bind: bool = False) -> dict:
    info = probe_loader()
    rng = random.Random(seed)
    seeds = build_seeds(work / "seeds")
    case_dir = work / "case"
    case_dir.mkdir(parents=True, exist_ok=True)
    _gcc(case_dir / "libmut.so", "int h(void) { return 0; }\n", "-shared", "-fPIC", "-Wl,-soname,libmut.so")
    root = _gcc(case_dir / "libroot.so", "int h(void);\nint g(void) { return h(); }\n", "-shared", "-fPIC",
                f"-L{case_dir}", "-lmut", "-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LD_")}
    # ldd -r's way: the loader started on the file in trace mode (``--list`` never warns of symbols)
    loader_env = dict(env, LD_TRACE_LOADED_OBJECTS="1", LD_BIND_NOW="yes", LD_WARN="yes") if bind else env
    environment = Environment.from_process(environ=env, cwd=str(case_dir), loader=info).replace(preload_file=())
    counts: Counter = Counter()
    kinds: Counter = Counter()
    examples: list[str] = []
    tracebacks = 0
    slowest = 0.0
    originals = [s.read_bytes() for s in seeds]
    plain_root = root
    bound = bound_roots(seeds, case_dir) if bind else {}
    for number in range(cases):
        data, how = mutate(originals[number % len(originals)], rng)
        root, name = bound.get(number % len(originals), (plain_root, "libmut.so"))
        target = root.parent / name
        temp = root.parent / f".tmp{number}"
        temp.write_bytes(data)
        os.replace(temp, target)  # a new inode: no cached facts are reused
        loader_ok, loader_says = loader_verdict(info, root, loader_env, bind)
        started = time.perf_counter()
        try:
            result = Resolver(environment, FactsStore()).load(str(root), MODE_LIST)
            mine_ok, mine_says = my_verdict(result, bind)
        except Exception:  # noqa: BLE001 - counted: the goal is zero
            tracebacks += 1
            mine_ok, mine_says = None, traceback.format_exc(limit=2).splitlines()[-1]
        slowest = max(slowest, time.perf_counter() - started)
        agree = mine_ok == loader_ok
        counts["agree" if agree else "disagree"] += 1
        counts[f"loader {'ok' if loader_ok else 'fails'}"] += 1
        if loader_says == "timeout":
            counts["loader timeout"] += 1
        if not agree:
            theirs, mine = "ok" if loader_ok else loader_says[:70], "ok" if mine_ok else str(mine_says)[:70]
            key = f"loader {theirs} / libdoctor {mine}"
            kinds[key] += 1
            if len(examples) < show:
                kept = work / "disagreements" / f"case{number}-{how}.so"
                kept.parent.mkdir(exist_ok=True)
                kept.write_bytes(data)
                examples.append(f"{kept}: {key}")
    total = counts["agree"] + counts["disagree"]
    return {"cases": total, "agree": counts["agree"], "agreement": counts["agree"] / max(total, 1),
            "tracebacks": tracebacks, "loader_timeouts": counts["loader timeout"],
            "loader_ok": counts["loader ok"], "loader_fails": counts["loader fails"],
            "slowest_libdoctor_s": round(slowest, 3), "disagreements": kinds.most_common(), "examples": examples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--show", type=int, default=0, help="keep this many disagreeing files and name them")
    parser.add_argument("--work", help="folder for the seeds and cases (default: a temporary one)")
    parser.add_argument("--bind", action="store_true", help="judge with symbols bound, as ldd -r does")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        report = sweep(args.cases, args.seed, Path(args.work or temp), args.show, args.bind)
    print(f"{report['cases']} cases (seed {args.seed}): {report['agree']} agree with ld.so --list "
          f"({100 * report['agreement']:.2f}%); loader ok {report['loader_ok']}, fails {report['loader_fails']}; "
          f"{report['tracebacks']} tracebacks, {report['loader_timeouts']} loader timeouts, slowest libdoctor load "
          f"{report['slowest_libdoctor_s']} s")
    for kind, count in report["disagreements"]:
        print(f"  {count:5d}  {kind}")
    for line in report["examples"]:
        print(f"  kept {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
