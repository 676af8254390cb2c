"""The ``libdoctor`` command line.  Exit status: 0 healthy, 1 problems found, 2 usage or internal error."""
from __future__ import annotations

import errno
import json
import os
import sys
from typing import Any, Optional

import click

from . import __version__
from .errors import LibdoctorError, UsageError
from .logs import configure_logging, get_logger, progress

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2


class _Group(click.Group):
    """Usage errors exit 2 (click's default); anything unexpected becomes one line and exit 2."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except LibdoctorError as exc:
            _fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
                where = f"{exc.filename}: " if exc.filename else ""  # a full or read-only disk: its one line
                _fail(f"{where}{exc.strerror}")
            get_logger().error("internal error", error=repr(exc))
            _fail(f"internal error: {exc.__class__.__name__}: {exc}")


def _fail(message: str) -> None:
    """One line on stderr (a path from the machine in it escaped, as in every report), exit 2."""
    from .report import escaped

    click.echo(f"libdoctor: {escaped(message)}", err=True)
    sys.exit(EXIT_ERROR)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="libdoctor")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), help="Log level (logs go to stderr).")
def main(log_level: str) -> None:
    """Diagnose and repair shared-library problems of GPU machine-learning environments."""
    configure_logging(log_level)
    try:
        os.getcwd()
    except OSError as exc:  # relative paths (and $ORIGIN of relative targets) would mean nothing
        raise UsageError(f"the current folder cannot be read ({exc.strerror}): run libdoctor from another "
                         "folder") from None


def _path_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be read as given (None: it can)."""
    try:
        os.stat(path)
    except OSError as exc:
        if os.path.islink(path):
            if exc.errno == errno.ELOOP:
                return "a symlink loop"
            return f"a dangling symlink (-> {os.readlink(path)})"
        return exc.strerror.lower() if exc.strerror else "cannot be read"
    return None


def check_inputs(targets: tuple[str, ...] = (), prefixes: tuple[str, ...] = (), python: Optional[str] = None,
                 caller: Optional[str] = None, look_in: tuple[str, ...] = (), config: Optional[str] = None) -> None:
    """Every path a user typed exists and is what the option wants, or one line and exit 2: never a fallback."""
    named = [(t, "TARGET") for t in targets] + [(f, "--look-in") for f in look_in]
    named += [(p, "--env") for p in prefixes] + [(x, o) for x, o in ((python, "--python"), (caller, "--dlopen-from"),
                                                                     (config, "--config")) if x]
    for path, option in named:
        problem = _path_problem(path)
        if problem:
            raise UsageError(f"{option} {path}: {problem}")
    for folder in look_in:
        if not os.path.isdir(folder):
            raise UsageError(f"--look-in {folder}: not a folder")
    for prefix in prefixes:
        from .targets import is_python_environment

        if not is_python_environment(prefix):
            raise UsageError(f"--env {prefix}: not a Python environment (no bin/python, no "
                             "lib/pythonX.Y/site-packages, no conda-meta)")
    if python and not os.path.isfile(python):
        raise UsageError(f"--python {python}: not a file")


def _target_options(function):  # noqa: ANN001, ANN202 - click decorator plumbing
    options = [
        click.argument("targets", nargs=-1, type=click.Path()),
        click.option("--env", "prefix", type=click.Path(), help="The Python environment (prefix) to work on."),
        click.option("--python", "python", type=click.Path(), help="The environment of this Python interpreter."),
        click.option("--dlopen-from", "caller", type=click.Path(), help="Resolve targets as a dlopen() by CALLER."),
        click.option("--dlopen-strings/--no-dlopen-strings", default=True, show_default=True,
                     help="Check the lib*.so* strings of each target that imports dlopen (probable dlopen calls; a "
                          "framework's own objects are judged by its load model instead). A name not found is a "
                          "warning, never the verdict."),
        click.option("--json", "as_json", is_flag=True,
                     help="Machine-readable output (its schema: libdoctor schema COMMAND)."),
        click.option("--look-in", multiple=True, type=click.Path(),
                     help="Another folder to look in for other versions of missing libraries (repeatable)."),
        click.option("--no-activate", is_flag=True,
                     help="Do not apply the --env's etc/conda/activate.d scripts (applied when it is not active)."),
        click.option("--rule", "only", multiple=True, help="Run only this rule (repeatable; see `libdoctor rules`)."),
        click.option("--skip-rule", "skip", multiple=True, help="Do not run this rule (repeatable)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _scan_reports(targets: tuple[str, ...], prefix: Optional[str], python: Optional[str], caller: Optional[str],
                  dlopen_strings: bool, look_in: tuple[str, ...], no_activate: bool, only: tuple[str, ...],
                  skip: tuple[str, ...], no_cache: bool = False, symbols: bool = True, probe: bool = False,
                  libraries_only: bool = False) -> tuple[Any, list, bool]:
    """What ``scan`` judges: (the facts store, the reports, whether they are the environments found with none
    active).  Without targets and with no environment active, every environment with a GPU framework; with none,
    the machine's CUDA installation.  The store is saved when the reports are made of discovered environments."""
    from .loader.factstore import FactsStore
    from .scan import run_scan
    from .targets import active_environment, framework_environments

    check_inputs(targets, (prefix,) if prefix else (), python, caller, look_in)
    check_options(prefix, python, only, skip)
    log = get_logger()
    store = FactsStore() if no_cache else FactsStore.default()
    if store.load_problem:
        log.warning("facts cache ignored", problem=store.load_problem)
    kwargs = dict(store=store, caller=caller, dlopen_strings=dlopen_strings, look_in=look_in, probe=probe,
                  activate=not no_activate, symbols=symbols, only=only, skip=skip, libraries_only=libraries_only)
    if not (targets or prefix or python) and not active_environment():
        with progress("checking the Python environments of this machine"):
            reports = [run_scan(prefix=p, **kwargs) for p in framework_environments()]
        if reports:
            store.save()
            return store, reports, True
        report = run_scan(prefix=sys.prefix, **kwargs)  # its own env has no framework: the CUDA install is checked
        report.discovery.environment = None
        report.discovery.fallback = ("no Python environment with a GPU framework found (none active; conda's envs, "
                                     "pyenv's versions, python3 on PATH); checked the machine's CUDA installation")
    else:
        with progress("importing the frameworks (--probe)" if probe else "resolving every dependency"):
            report = run_scan(targets, prefix=prefix, python=python, **kwargs)
    return store, [report], False


@main.command()
@_target_options
@click.option("-v", "--verbose", is_flag=True,
              help="The same report, then every object, every search, the dependency tree of every target and "
                   "every graded repair.")
@click.option("-q", "--quiet", is_flag=True, help="Only the verdict line (and the exit status).")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the ELF facts cache.")
@click.option("--no-symbols", is_flag=True, help="Do not check that every imported symbol is defined (faster).")
@click.option("--probe", is_flag=True,
              help="Also import each framework in the environment's python (runs its code; time-limited) and "
                   "compare what it really loads with the prediction.")
@click.option("--libraries-only", is_flag=True,
              help="Judge every library but not the driver and the device (a CPU build host, CI, an image build).")
def scan(targets: tuple[str, ...], prefix: Optional[str], python: Optional[str], caller: Optional[str],
         dlopen_strings: bool, as_json: bool, look_in: tuple[str, ...], no_activate: bool, only: tuple[str, ...],
         skip: tuple[str, ...], verbose: bool, quiet: bool, no_cache: bool, no_symbols: bool, probe: bool,
         libraries_only: bool) -> None:
    """Resolve every dependency of TARGETS (files or folders) exactly as glibc's loader would.

    Without TARGETS: the GPU frameworks of the active Python environment; with none active, of every
    Python environment on the machine that has one; without any, the machine's CUDA installation.
    """
    from .report import render_human, render_summary, to_json

    store, reports, discovered = _scan_reports(targets, prefix, python, caller, dlopen_strings, look_in, no_activate,
                                               only, skip, no_cache=no_cache, symbols=not no_symbols, probe=probe,
                                               libraries_only=libraries_only)
    log = get_logger()
    if discovered:
        _show_reports(reports, as_json, quiet, verbose)
        sys.exit(EXIT_OK if all(r.healthy for r in reports) else EXIT_PROBLEMS)
    (report,) = reports
    problem = store.save()
    if problem:
        log.warning("facts cache not saved", problem=problem)
    log.info("scan finished", targets=len(report.targets), problems=len(report.problems), parsed=store.parsed)
    if as_json:
        click.echo(json.dumps(to_json(report), separators=(",", ":")))
    elif quiet:
        render_summary(report, sys.stdout, quiet=True)
    else:
        render_human(report, sys.stdout, verbose)
    sys.exit(EXIT_OK if report.healthy else EXIT_PROBLEMS)


@main.command()
@_target_options
@click.option("--redact", is_flag=True, help="Replace the home folder and the user's name (for a public ticket).")
def report(targets: tuple[str, ...], prefix: Optional[str], python: Optional[str], caller: Optional[str],
           dlopen_strings: bool, as_json: bool, look_in: tuple[str, ...], no_activate: bool, only: tuple[str, ...],
           skip: tuple[str, ...], redact: bool) -> None:
    """A short summary to paste into a bug ticket: OS, glibc, GPU and driver, CUDA installs, each environment's
    frameworks with the CUDA and cuDNN they were built for and the copies they load, and the verdict (Markdown;
    --json for the document).  The same judgement as scan, on the same TARGETS."""
    from .gpu.installs import cuda_installs, os_name
    from .report import markdown, redacted, redactor, ticket, to_json

    store, reports, _discovered = _scan_reports(targets, prefix, python, caller, dlopen_strings, look_in,
                                                no_activate, only, skip)
    store.save()
    document = ticket([to_json(r) for r in reports], os_name(),
                      tuple({"path": c.path, "version": c.version} for c in cuda_installs()))
    if redact:
        document = redacted(document, redactor())
    click.echo(json.dumps(document, separators=(",", ":")) if as_json else markdown(document), nl=as_json)
    sys.exit(EXIT_OK if document["healthy"] else EXIT_PROBLEMS)


def check_options(prefix: Optional[str], python: Optional[str], only: tuple[str, ...] = (),
                  skip: tuple[str, ...] = ()) -> None:
    """Options that cannot go together, and rule names that do not exist: exit 2 before anything runs."""
    if prefix and python:
        raise click.UsageError("--env and --python name the same thing: give one")
    if only or skip:
        from .rules import available_rules, select_rules

        select_rules(available_rules(), only, skip)


def _show_reports(reports: list, as_json: bool, quiet: bool, verbose: bool) -> None:  # noqa: ANN001
    """Several environments: each report in turn (JSON: ``{"schema_version", "environments": [report]}``)."""
    from .report import Style, checklist_lines, plural, quiet_verdict, render_human, to_json, write_lines

    if as_json:
        click.echo(json.dumps({"schema_version": 1, "environments": [to_json(r) for r in reports]},
                              separators=(",", ":")))
        return
    if quiet:
        click.echo(quiet_verdict(reports))
        return
    names = ", ".join(r.discovery.environment.prefix for r in reports if r.discovery.environment)
    click.echo(f"no environment is active: checking the {plural(len(reports), 'environment')} with a GPU "
               f"framework ({names})")
    write_lines(sys.stdout, checklist_lines(reports, Style(sys.stdout)))
    for report in reports:
        click.echo("")
        render_human(report, sys.stdout, verbose)


@main.command()
@click.argument("soname")
@_target_options
def explain(soname: str, targets: tuple[str, ...], prefix: Optional[str], python: Optional[str],
            caller: Optional[str], dlopen_strings: bool, as_json: bool, look_in: tuple[str, ...],
            no_activate: bool, only: tuple[str, ...], skip: tuple[str, ...]) -> None:
    """Every folder the loader searches for SONAME, in order, for each object that asks for it.

    TARGETS and the options pick what to scan, as for scan.  Exit status 1 when SONAME is not found
    for some object.
    """
    from .loader.factstore import FactsStore
    from .report import Style, explain_json, explain_lines, searches_for, write_lines
    from .scan import run_scan

    check_inputs(targets, (prefix,) if prefix else (), python, caller, look_in)
    check_options(prefix, python, only, skip)
    store = FactsStore.default()
    report = run_scan(targets, store=store, caller=caller, prefix=prefix, python=python, dlopen_strings=dlopen_strings,
                      look_in=look_in, activate=not no_activate, symbols=False, diagnosis=False)
    store.save()
    if as_json:
        click.echo(json.dumps(explain_json(report, soname)))
    else:
        write_lines(sys.stdout, explain_lines(report, soname, Style(sys.stdout)))
    missing = any(not r.found for r in searches_for(report, soname))
    sys.exit(EXIT_PROBLEMS if missing else EXIT_OK)


@main.command()
@_target_options
@click.option("--apply", "do_apply", is_flag=True, help="Make the planned changes (journalled, undoable).")
@click.option("--in-place", is_flag=True, help="Create links beside the libraries instead of in a shim folder.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before applying.")
@click.option("--accept", "accept", multiple=True, type=click.Choice(["risky"]),
              help="Also apply repairs of this grade (risky: across a soname bump or a CUDA release).")
@click.option("--force", is_flag=True, help="Also apply repairs graded broken.")
@click.option("--libraries-only", is_flag=True, help="Judge every library but not the driver and the device.")
def fix(targets: tuple[str, ...], prefix: Optional[str], python: Optional[str], caller: Optional[str],
        dlopen_strings: bool, as_json: bool, look_in: tuple[str, ...], no_activate: bool, only: tuple[str, ...],
        skip: tuple[str, ...], do_apply: bool, in_place: bool, yes: bool, accept: tuple[str, ...],
        force: bool, libraries_only: bool) -> None:
    """Plan repairs for TARGETS (as scan picks them); with --apply, make them.

    Exit status: 0 nothing to fix (or, after --apply, healthy), 1 something to fix.
    """
    from .loader.factstore import FactsStore
    from .repair.fix import apply_plan
    from .report import plan_json, render_plan
    from .scan import run_scan

    check_inputs(targets, (prefix,) if prefix else (), python, caller, look_in)
    check_options(prefix, python, only, skip)
    store = FactsStore.default()
    kwargs = dict(prefix=prefix, python=python, caller=caller, dlopen_strings=dlopen_strings, in_place=in_place,
                  only=only, skip=skip, force=force, store=store, look_in=look_in, accept=accept,
                  activate=not no_activate, libraries_only=libraries_only)
    if do_apply and not yes and not sys.stdin.isatty():
        raise UsageError("fix --apply changes this machine: without a terminal to ask on, give --yes")
    with progress("planning repairs (each one is verified by resolving again)"):
        plan = run_scan(targets, **kwargs)
    assert plan.diagnosis is not None
    outcome = after = None
    shown = False
    if do_apply and plan.diagnosis.chosen:
        if sys.stdin.isatty() and not yes and not as_json:
            render_plan(plan, sys.stdout)
            shown = True
            if not click.confirm("apply the changes marked *?", default=False):
                sys.exit(EXIT_PROBLEMS)
        outcome = apply_plan(plan)
        log = get_logger()
        for created in outcome.created:
            log.info("repair applied", run_id=outcome.run_id, change=created)
        for refused in outcome.refused:
            log.warning("repair refused", run_id=outcome.run_id, reason=refused)
        after = run_scan(targets, **kwargs)
    store.save()
    if as_json:
        click.echo(json.dumps(plan_json(plan, outcome, after), indent=1))
    else:
        render_plan(plan, sys.stdout, outcome, after, show_plan=not shown,
                    activation=_activation_advice(plan) if outcome and outcome.search_path_changed else None)
    final = after or plan
    sys.exit(EXIT_PROBLEMS if not final.healthy else EXIT_OK)


def _activation_advice(report) -> str:  # noqa: ANN001 - ScanReport
    """How the applied search-path changes reach the programs of the environment."""
    from .repair.fixer import repair_prefix

    inputs = report.inputs
    where = repair_prefix(inputs.paths, inputs.prefix, inputs.python)
    if where and os.path.isdir(os.path.join(where, "conda-meta")):
        return f"active in: `conda activate {where}` (its activate.d script), and `libdoctor preflight -- COMMAND`"
    env = f" --env {where}" if where else ""
    return (f"active in: `eval \"$(libdoctor env{env})\"` in the shell that starts the program, and "
            "`libdoctor preflight -- COMMAND`")


@main.command("rules")
@click.option("--json", "as_json", is_flag=True)
def list_rules(as_json: bool) -> None:
    """List the rules (built-in and from the entry-point group libdoctor.rules)."""
    from .rules import available_rules

    rules = available_rules()
    if as_json:
        click.echo(json.dumps({"schema_version": 1, "rules": [{"id": r.id, "description": r.description}
                                                              for r in rules]}))
        return
    width = max(len(r.id) for r in rules)
    for rule in rules:
        click.echo(f"{rule.id.ljust(width)}  {rule.description}")


@main.command("env")
@click.option("--shell", type=click.Choice(["sh", "fish", "json"]), default="sh", show_default=True)
@click.option("--env", "prefix", type=click.Path(), help="The environment whose repairs to activate.")
def env_command(shell: str, prefix: Optional[str]) -> None:
    """Print the settings that activate the applied repairs: eval "$(libdoctor env)"."""
    from .repair.fixer import applied_folders, shell_settings
    from .targets import python_env

    check_inputs(prefixes=(prefix,) if prefix else ())
    where = os.path.abspath(prefix) if prefix else python_env().prefix
    click.echo(shell_settings(*applied_folders(where), shell), nl=False)


@main.command("undo")
@click.argument("run_id", required=False)
@click.option("--all", "undo_all", is_flag=True, help="Undo every recorded run, newest first.")
@click.option("--list", "list_runs", is_flag=True, help="List the runs that can be undone.")
@click.option("--json", "as_json", is_flag=True)
def undo_command(run_id: Optional[str], undo_all: bool, list_runs: bool, as_json: bool) -> None:
    """Remove exactly what a run created, while it is still what was created."""
    from .repair.fixer import journal_problems, load_journals, undo
    from .repair.statedir import state_dir, state_lock

    root = state_dir()
    if list_runs:
        runs = [{"run_id": j["run_id"], "env": j.get("env"), "started": j.get("started"),
                 "changes": sum(isinstance(a, dict) and a.get("state") == "done" for a in j["actions"])}
                for j in load_journals(root)]
        problems = journal_problems(root)
        if as_json:
            click.echo(json.dumps({"schema_version": 1, "runs": runs, "unreadable": problems}))
        else:
            lines = [f"{r['run_id']}  {r['changes']} change(s)  {r['env'] or ''}" for r in runs] + problems
            click.echo("\n".join(lines) or "no runs")
        return
    if not run_id and not undo_all:
        raise click.UsageError("name a RUN-ID or give --all (see --list)")
    with state_lock(root):
        lines = undo(root, None if undo_all else run_id)
    _report_lines(lines or ["nothing to undo"], as_json)
    sys.exit(EXIT_PROBLEMS if any(line.startswith("left ") for line in lines) else EXIT_OK)


@main.command()
@click.argument("targets", nargs=-1, type=click.Path())
@click.option("--env", "environments", multiple=True, type=click.Path(), help="A Python environment to watch.")
@click.option("--config", "config_path", type=click.Path(), help="A TOML configuration file (after the system "
              "and user ones).")
@click.option("--heal", type=click.Choice(["off", "safe"]), help="Apply repairs graded safe (default: off).")
@click.option("--in-place", is_flag=True, default=None, help="Heal with links beside the libraries.")
@click.option("--interval", type=float, help="Seconds between re-verifications without events.")
@click.option("--debounce", type=float, help="Quiet seconds that close a burst of file events.")
@click.option("--metrics-file", type=click.Path(), help="Write a Prometheus textfile here after each run.")
@click.option("--once", is_flag=True, help="Verify (and heal) once, write metrics, and exit (for the timer unit).")
def watch(targets: tuple[str, ...], environments: tuple[str, ...], config_path: Optional[str], heal: Optional[str],
          in_place: Optional[bool], interval: Optional[float], debounce: Optional[float],
          metrics_file: Optional[str], once: bool) -> None:
    """Watch TARGETS and environments; re-verify after changes; heal what is safe (--heal safe).

    Events are structlog lines on stderr (JSON when not on a terminal).  SIGHUP re-reads the
    configuration; SIGTERM and SIGINT stop cleanly.
    """
    import dataclasses

    from .daemon.config import checked_overrides, load_config
    from .daemon.watch import InstanceLock, Watcher, units_of
    from .loader.factstore import FactsStore
    from .repair.statedir import state_dir

    check_inputs(targets, environments, config=config_path)
    overrides = checked_overrides({k: v for k, v in (("heal", heal), ("in_place", in_place), ("interval", interval),
                                                     ("debounce", debounce), ("metrics_file", metrics_file))
                                   if v is not None})

    def configured():  # noqa: ANN202
        return dataclasses.replace(load_config(config_path), **overrides)

    config = configured()
    root = state_dir()
    log = get_logger()
    store = FactsStore.default()
    watcher = Watcher(config, units_of(config, targets, environments), store, root, log, configured,
                      units_for=lambda c: units_of(c, targets, environments))
    if once:
        healthy = watcher.verify([])
        store.save()
        sys.exit(EXIT_OK if healthy else EXIT_PROBLEMS)
    lock = InstanceLock(root)
    try:
        sys.exit(watcher.run())
    finally:
        lock.release()


@main.command("ps")
@click.option("--json", "as_json", is_flag=True)
def ps_command(as_json: bool) -> None:
    """Processes with TensorFlow or PyTorch loaded: their CUDA libraries, stale mappings, CPU-only runs.

    Exit status 1 when a process maps a replaced or deleted library, an impostor (a CUDA library of another
    major than its framework asks for), or runs a framework on the CPU.
    """
    from .daemon.ps import ps_json, scan_processes

    reports = scan_processes()
    if as_json:
        click.echo(json.dumps(ps_json(reports)))
    else:
        from .report import write_lines

        lines = [] if reports else ["no process has a GPU framework or CUDA library loaded"]
        for report in reports:
            frameworks = ", ".join(report.frameworks) or "no framework"
            state = " (on the CPU: no CUDA runtime mapped)" if report.on_cpu else ""
            lines.append(f"{report.pid} {report.name}: {frameworks}{state}")
            lines += [f"    {mapped.path}" for mapped in report.cuda]
            lines += [f"    restart needed: {mapped.path} was {'deleted' if mapped.deleted else 'replaced'}"
                      for mapped in report.stale]
            lines += [f"    impostor in use: {impostor}" for impostor in report.impostors]
        write_lines(sys.stdout, lines)
    bad = any(r.stale or r.on_cpu or r.impostors for r in reports)
    sys.exit(EXIT_PROBLEMS if bad else EXIT_OK)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--env", "prefix", type=click.Path(), help="The command's environment (default: where COMMAND lives).")
@click.option("--profile", type=click.Choice(["bert-serving", "generic"]),
              help="Which checks (default: bert-serving for bert-serving-start, else generic).")
@click.option("--warn-only", is_flag=True, help="Report blocking problems but start COMMAND anyway.")
@click.option("--check-only", is_flag=True, help="Check and exit (0 ready, 1 blocked): for ExecStartPre=.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (to stderr when COMMAND runs).")
@click.option("--look-in", multiple=True, type=click.Path(),
              help="Another folder to look in for copies of missing libraries (repeatable), as for scan.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def preflight(prefix: Optional[str], profile: Optional[str], warn_only: bool, check_only: bool, as_json: bool,
              look_in: tuple[str, ...], command: tuple[str, ...]) -> None:
    """Check COMMAND's environment, then become COMMAND (same pid) with the applied repairs active.

    Usage: libdoctor preflight [OPTIONS] -- COMMAND [ARGS...]
    """
    from .preflight import exec_command, profile_for, run_checks

    check_inputs(prefixes=(prefix,) if prefix else (), look_in=look_in)
    result = run_checks(command, prefix, profile_for(command[0], profile), look_in=look_in)
    stream = sys.stdout if check_only else sys.stderr
    if as_json:
        click.echo(json.dumps(_preflight_json(result)), file=stream)
    else:
        _render_preflight(result, stream)
    if check_only:
        sys.exit(EXIT_PROBLEMS if result.blocked else EXIT_OK)
    if result.blocked and not warn_only:
        sys.exit(EXIT_PROBLEMS)
    stream.flush()
    try:
        exec_command(result)
    except OSError as exc:
        raise LibdoctorError(f"cannot run {command[0]}: {exc.strerror}") from None


def _preflight_json(result) -> dict:  # noqa: ANN001
    return {"schema_version": 1, "command": list(result.command), "profile": result.profile, "env": result.prefix,
            "blocked": result.blocked, "ld_library_path": result.ld_library_path, "next_step": result.next_step,
            "checks": [{"name": r.name, "status": r.status, "message": r.message, "blocking": r.blocking,
                        "details": list(r.details), "fix": r.fix} for r in result.results]}


def _render_preflight(result, stream) -> None:  # noqa: ANN001
    from .report import Style, write_lines

    style = Style(stream)
    marks = {"ok": style.ok, "partial": style.warn, "missing": style.bad, "crashed": style.crash}
    lines = [f"libdoctor preflight: {result.shown_command} (profile {result.profile}, "
             f"env {result.prefix or 'none'})",
             "    LD_LIBRARY_PATH it starts with: "
             + (result.ld_library_path if result.ld_library_path is not None else "(not set)")]
    for check in result.results:
        mark = marks.get(check.status, "[?]")
        mark = style.good(mark) if check.status == "ok" else style.error(mark) if check.blocking else mark
        lines.append(f"{mark} {check.name}: {check.message}")
        lines.extend(f"      {detail}" for detail in check.details)
    blocking = sum(r.blocking for r in result.results)
    lines.append(style.error(f"blocked: {blocking} problem{'s stop' if blocking != 1 else ' stops'} the start "
                             "(--warn-only starts anyway)") if blocking else style.good("ready"))
    if blocking and result.next_step:
        lines.append(f"next step: {result.next_step}")
    write_lines(stream, lines)


@main.group("hook")
def hook_group() -> None:
    """Conda activation scripts and the bert-serving-start wrapper."""


def _report_lines(lines: list[str], as_json: bool, changed: Optional[bool] = None) -> None:
    document: dict = {"schema_version": 1, "report": lines}
    if changed is not None:
        document["changed"] = changed  # for configuration tools: did this run change the machine?
    click.echo(json.dumps(document) if as_json else "\n".join(lines))


@hook_group.command("install")
@click.option("--env", "prefix", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True)
def hook_install(prefix: str, as_json: bool) -> None:
    """Write activate.d/deactivate.d scripts and wrap bert-serving-start with libdoctor preflight."""
    from .repair.hooks import install_hook, libdoctor_command

    _report_lines(install_hook(prefix, libdoctor_command()), as_json)


@hook_group.command("remove")
@click.option("--env", "prefix", required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True)
def hook_remove(prefix: str, as_json: bool) -> None:
    """Take the hook away again; anything libdoctor did not write is left alone."""
    from .repair.hooks import remove_hook

    lines = remove_hook(prefix)
    _report_lines(lines, as_json)
    sys.exit(EXIT_PROBLEMS if any(line.startswith("left ") for line in lines) else EXIT_OK)


@main.group("systemd")
def systemd_group() -> None:
    """The systemd units (libdoctor-scan.service/.timer, libdoctor-watch.service)."""


@systemd_group.command("install")
@click.option("--dest", default="/etc/systemd/system", show_default=True, type=click.Path())
@click.option("--executable", type=click.Path(), help="The libdoctor to run (default: this one).")
@click.option("--json", "as_json", is_flag=True)
def systemd_install(dest: str, executable: Optional[str], as_json: bool) -> None:
    """Write the units into DEST with the path of the libdoctor executable filled in."""
    from .daemon.config import metrics_folder
    from .daemon.units import SYSTEMD_FOLDERS, config_path, install_config, install_units

    configured = config_path(dest)
    # the units must be able to write the configured metrics_file (they make the rest of the system read-only)
    folder = metrics_folder(configured) if configured else None
    units = install_units(dest, executable, (folder,) if folder else ())
    lines = [f"{'wrote' if changed else 'unchanged'} {path}" for path, changed in units]
    from .targets import framework_environments

    lines.append(install_config(dest, framework_environments()))
    changed = any(c for _p, c in units) or lines[-1].startswith("wrote")
    if not as_json and changed and os.path.abspath(dest) in SYSTEMD_FOLDERS:
        lines.append("then: systemctl daemon-reload && systemctl enable --now libdoctor-scan.timer "
                     "libdoctor-watch.service")
    _report_lines(lines, as_json, changed=changed)


@main.command()
def man() -> None:
    """Print libdoctor's manual page (roff, from the commands' own help): libdoctor man | man -l -"""
    click.echo(man_page(), nl=False)


def man_page() -> str:
    def roff(text: str) -> str:
        return text.replace("\\", "\\e").replace("-", "\\-").replace("\n.", "\n\\&.")

    ctx = click.Context(main, info_name="libdoctor")
    lines = [f'.TH LIBDOCTOR 1 "" "libdoctor {__version__}" "User Commands"', ".SH NAME",
             "libdoctor \\- " + roff(main.help.splitlines()[0] if main.help else ""), ".SH SYNOPSIS",
             ".B libdoctor", "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...", ".SH EXIT STATUS",
             "0 healthy, 1 problems found, 2 usage or internal error.", ".SH COMMANDS"]

    def describe(command: click.Command, name: str, parent: click.Context) -> None:
        sub = click.Context(command, info_name=name, parent=parent)
        lines.extend([".TP", f".B {roff(sub.command_path)} {roff(' '.join(command.collect_usage_pieces(sub)))}",
                      roff((command.help or "").strip())])
        for param in command.get_params(sub):
            record = param.get_help_record(sub)
            if record:
                lines.extend([".RS", ".TP", f".B {roff(record[0])}", roff(record[1]), ".RE"])
        if isinstance(command, click.Group):
            for child in sorted(command.commands):
                describe(command.commands[child], child, sub)

    for name in sorted(main.commands):
        describe(main.commands[name], name, ctx)
    lines += [".SH ENVIRONMENT", "NO_COLOR, LIBDOCTOR_STATE_DIR, LIBDOCTOR_CACHE_DIR, LD_LIBRARY_PATH, LD_PRELOAD.",
              ".SH SEE ALSO", "ld.so(8), ldconfig(8), ldd(1)"]
    return "\n".join(lines) + "\n"


SCHEMAS = {"scan": ("scan", "scan --json"), "fix": ("fix", "fix --json"),
           "preflight": ("preflight", "preflight --json"), "ps": ("ps", "ps --json"),
           "explain": ("explain", "explain SONAME --json"), "rules": ("rules", "rules --json"),
           "undo": ("lines", "undo RUN-ID|--all --json"), "undo-list": ("runs", "undo --list --json"),
           "hook": ("lines", "hook install|remove --json"), "systemd": ("lines", "systemd install --json"),
           "report": ("report", "report --json")}


@main.command()
@click.argument("command", required=False, type=click.Choice(sorted(SCHEMAS)))
def schema(command: Optional[str]) -> None:
    """Print the JSON Schema of COMMAND's --json output (without COMMAND: list them)."""
    from importlib import resources

    if command is None:
        click.echo("\n".join(f"{name}: libdoctor {SCHEMAS[name][1]}" for name in sorted(SCHEMAS)))
        return
    click.echo(resources.files("libdoctor").joinpath(f"schemas/{SCHEMAS[command][0]}.json").read_text(encoding="utf-8"),
               nl=False)


if __name__ == "__main__":  # pragma: no cover
    main()
