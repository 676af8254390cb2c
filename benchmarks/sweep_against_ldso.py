#!/usr/bin/env python3
"""Compare libdoctor with the real loader over whole folders (not a timing: an agreement count).

    python benchmarks/sweep_against_ldso.py FOLDER [FOLDER ...]

Every 64-bit dynamic ELF file directly in each folder is resolved by libdoctor as ``ld.so --list``
would and by ``LD_TRACE_LOADED_OBJECTS=1 ld.so FILE``; the two lists must be equal, path for path.
"""
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from libdoctor.loader.elffacts import ET_DYN, ET_EXEC
from libdoctor.loader.environment import Environment
from libdoctor.loader.factstore import FactsStore
from libdoctor.loader.loaderinfo import probe_loader
from libdoctor.loader.resolver import MODE_LIST, Resolver
from tests.conftest import ldso_trace, loader_env, predicted_entries

info = probe_loader()
env = Environment.from_process(environ=loader_env(), cwd='/tmp', loader=info).replace(preload_file=())
store = FactsStore()
r = Resolver(env, store)
paths = [p for d in sys.argv[1:] for p in sorted(glob.glob(d + '/*')) if os.path.isfile(p) and not os.path.islink(p)]
checked = agree = 0
bad = []
for p in paths:
    f = store.get_path(p)
    if not getattr(f, 'dynamic', False) or f.e_type not in (ET_DYN, ET_EXEC) or f.elf_class != 64:
        continue
    t = ldso_trace(info, p, '/tmp')
    if t.returncode not in (0, 1) or 'error while loading' in t.stderr:
        continue
    checked += 1
    mine = sorted(predicted_entries(r.load(p, MODE_LIST)), key=str)
    if mine == sorted(t.entries, key=str):
        agree += 1
    else:
        bad.append(p)
print(f"{checked} objects compared, {agree} agree; disagreements: {bad[:5]}")
