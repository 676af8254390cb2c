#!/usr/bin/env python3
"""SIGKILL during ``libdoctor fix --apply``, then ``libdoctor undo --all``: is every tree restored byte for byte?

    python benchmarks/kill_trials.py [--trials 100] [--seed 1]

Each trial builds one of two fields, alternately: the missing libraries of tests/test_fix.py (TF-1.14-like
consumers, CUDA 10.0 and cuDNN 7.6.5 off every search path, a conda env), or the seed's impostor of
tests/test_diagnosis.py (a hand-made libcudnn.so.7 -> cuDNN 8 that fix renames aside, the genuine cuDNN 7.6.5
put first); it snapshots the tree (every path's type, link text, content hash and mode), starts
``fix --apply`` (in place or into the shim folder) with a 20 ms pause after each change, kills
it once its journal shows a random number of changes done (0 to all) plus a random 0-25 ms (so that kills also
land between a change's "intended" and "done" records), runs ``undo --all`` and compares.  Prints restored /
trials, and how many kills landed after some change.
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.conftest import ElfFactory, loader_env  # noqa: E402
from tests.test_diagnosis import build_impostor_field  # noqa: E402
from tests.test_fix import build_field, snapshot  # noqa: E402
from tests.test_impostor import build_machine  # noqa: E402

FIELDS = ("missing", "impostor")


def fix_command(work: Path, kind: str, in_place: bool) -> tuple[list[str], Path, Path]:
    """(the fix --apply command, the tree it changes, its state folder) for a new field of ``kind``."""
    elf = ElfFactory(work)
    words = [sys.executable, "-m", "libdoctor.cli", "fix", "--apply", "--yes", "--json"]
    words += ["--in-place"] if in_place else []
    if kind == "impostor":
        field = build_impostor_field(elf, build_machine(elf, work), work)
        return words + ["--env", str(field["prefix"]), "--look-in", field["look_in"]], work, work / "state"
    field = build_field(elf, work)
    words += ["--dlopen-strings", "--env", str(field["env"]), str(field["needed"]), str(field["dlopened"])]
    for folder in field["look_in"]:
        words += ["--look-in", folder]
    return words, field["tree"], field["state"]


def done_changes(state: Path) -> int:
    count = 0
    for journal in (state / "journal").glob("*.json") if (state / "journal").exists() else []:
        try:
            count += sum(a.get("state") == "done" for a in json.loads(journal.read_text())["actions"])
        except (ValueError, KeyError, OSError):
            pass
    return count


def run_trial(work: Path, rng: random.Random, kind: str, in_place: bool, changes: int) -> tuple[bool, int, str]:
    args, tree, state = fix_command(work, kind, in_place)
    env = loader_env({"LIBDOCTOR_STATE_DIR": str(state), "LIBDOCTOR_CACHE_DIR": str(work / "cache"),
                      "PYTHONPATH": str(REPO), "LIBDOCTOR_TEST_PAUSE_AFTER_CHANGE": "0.02"})
    skip = (str(state), str(work / "cache"), str(work / ".src"), str(work / ".stubs"))
    before = snapshot(tree, skip=skip)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wanted = rng.randrange(0, changes + 1)
    deadline = time.monotonic() + 60
    while proc.poll() is None and done_changes(state) < wanted and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0, 0.025))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_actions = done_changes(state)
    undo = subprocess.run([sys.executable, "-m", "libdoctor.cli", "undo", "--all"], env=env, capture_output=True,
                          text=True)
    after = snapshot(tree, skip=skip)
    lost = sorted(set(before.items()) ^ set(after.items()))
    return after == before, done_actions, (undo.stdout + undo.stderr)[-300:] if lost else ""


def changes_of_a_full_apply(work: Path, kind: str, in_place: bool) -> int:
    args, _tree, state = fix_command(work, kind, in_place)
    env = loader_env({"LIBDOCTOR_STATE_DIR": str(state), "LIBDOCTOR_CACHE_DIR": str(work / "cache"),
                      "PYTHONPATH": str(REPO)})
    subprocess.run(args, env=env, capture_output=True)
    return done_changes(state)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as temp:
        modes = [(kind, in_place) for kind in FIELDS for in_place in (False, True)]
        changes = {mode: changes_of_a_full_apply(Path(temp) / f"full-{mode[0]}-{mode[1]}", *mode) for mode in modes}
        restored = midway = 0
        failures = []
        for trial in range(args.trials):
            mode = modes[trial % len(modes)]
            ok, made, why = run_trial(Path(temp) / f"t{trial}", rng, mode[0], mode[1], changes[mode])
            restored += ok
            midway += 0 < made < changes[mode]
            if not ok:
                failures.append(f"trial {trial} ({mode[0]}, {'in place' if mode[1] else 'shim'}): {why}")
    shown = ", ".join(f"{kind} {'in place' if in_place else 'shim'} {n}" for (kind, in_place), n in changes.items())
    print(f"{restored}/{args.trials} trees restored byte for byte after SIGKILL + undo --all "
          f"({midway} kills landed mid-apply; changes of a full apply: {shown})")
    for line in failures[:10]:
        print("  " + line)
    return 0 if restored == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
