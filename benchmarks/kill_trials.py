#!/usr/bin/env python3
"""SIGKILL during ``libdoctor fix --apply``, then ``libdoctor undo --all``: is every tree restored byte for byte?

    python benchmarks/kill_trials.py [--trials 100] [--seed 1]

Each trial builds the field of tests/test_fix.py (TF-1.14-like consumers, CUDA 10.0 and cuDNN 7.6.5 off every
search path, a conda env), snapshots it (every path's type, link text, content hash and mode), starts
``fix --apply`` (in place or into the shim folder, alternately) with a 20 ms pause after each change, kills
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
from tests.test_fix import build_field, snapshot  # noqa: E402


def done_changes(state: Path) -> int:
    count = 0
    for journal in (state / "journal").glob("*.json") if (state / "journal").exists() else []:
        try:
            count += sum(a.get("state") == "done" for a in json.loads(journal.read_text())["actions"])
        except (ValueError, KeyError, OSError):
            pass
    return count


def run_trial(work: Path, rng: random.Random, in_place: bool, changes: int) -> tuple[bool, int, str]:
    field = build_field(ElfFactory(work), work)
    env = loader_env({"LIBDOCTOR_STATE_DIR": str(field["state"]), "LIBDOCTOR_CACHE_DIR": str(work / "cache"),
                      "PYTHONPATH": str(REPO), "LIBDOCTOR_TEST_PAUSE_AFTER_CHANGE": "0.02"})
    args = [sys.executable, "-m", "libdoctor.cli", "fix", "--apply", "--yes", "--json", "--dlopen-strings", "--env",
            str(field["env"]), str(field["needed"]), str(field["dlopened"])] + (["--in-place"] if in_place else [])
    for folder in field["look_in"]:
        args += ["--look-in", folder]
    before = snapshot(field["tree"])
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wanted = rng.randrange(0, changes + 1)
    deadline = time.monotonic() + 60
    while proc.poll() is None and done_changes(field["state"]) < wanted and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0, 0.025))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_actions = done_changes(field["state"])
    undo = subprocess.run([sys.executable, "-m", "libdoctor.cli", "undo", "--all"], env=env, capture_output=True,
                          text=True)
    after = snapshot(field["tree"])
    lost = sorted(set(before.items()) ^ set(after.items()))
    return after == before, done_actions, (undo.stdout + undo.stderr)[-300:] if lost else ""


def changes_of_a_full_apply(work: Path, in_place: bool) -> int:
    field = build_field(ElfFactory(work), work)
    env = loader_env({"LIBDOCTOR_STATE_DIR": str(field["state"]), "LIBDOCTOR_CACHE_DIR": str(work / "cache"),
                      "PYTHONPATH": str(REPO)})
    args = [sys.executable, "-m", "libdoctor.cli", "fix", "--apply", "--yes", "--dlopen-strings", "--env",
            str(field["env"]), str(field["needed"]), str(field["dlopened"])] + (["--in-place"] if in_place else [])
    for folder in field["look_in"]:
        args += ["--look-in", folder]
    subprocess.run(args, env=env, capture_output=True)
    return done_changes(field["state"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as temp:
        changes = {mode: changes_of_a_full_apply(Path(temp) / f"full-{mode}", mode) for mode in (False, True)}
        restored = midway = 0
        failures = []
        for trial in range(args.trials):
            in_place = trial % 2 == 1
            ok, made, why = run_trial(Path(temp) / f"t{trial}", rng, in_place, changes[in_place])
            restored += ok
            midway += 0 < made < changes[in_place]
            if not ok:
                failures.append(f"trial {trial}: {why}")
    print(f"{restored}/{args.trials} trees restored byte for byte after SIGKILL + undo --all "
          f"({midway} kills landed mid-apply; a full apply makes {changes[False]} changes into the shim folder, "
          f"{changes[True]} in place)")
    for line in failures[:10]:
        print("  " + line)
    return 0 if restored == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
