"""The ``libdoctor`` command line.  Exit status: 0 healthy, 1 problems found, 2 usage or internal error."""
from __future__ import annotations

import json
import sys
from typing import Optional

import click

from . import __version__
from .errors import LibdoctorError
from .logs import configure_logging, get_logger

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2


class _Group(click.Group):
    """Usage errors exit 2 (click's default); anything unexpected becomes one line and exit 2."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except LibdoctorError as exc:
            click.echo(f"libdoctor: {exc}", err=True)
            sys.exit(EXIT_ERROR)
        except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
            get_logger().error("internal error", error=repr(exc))
            click.echo(f"libdoctor: internal error: {exc.__class__.__name__}: {exc}", err=True)
            sys.exit(EXIT_ERROR)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="libdoctor")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), help="Log level (logs go to stderr).")
def main(log_level: str) -> None:
    """Diagnose and repair shared-library problems of GPU machine-learning environments."""
    configure_logging(log_level)


@main.command()
@click.argument("targets", nargs=-1, type=click.Path())
@click.option("--env", "prefix", type=click.Path(), help="Scan the frameworks of this Python environment (prefix).")
@click.option("--python", "python", type=click.Path(), help="Scan the environment of this Python interpreter.")
@click.option("--dlopen-from", "caller", type=click.Path(),
              help="Resolve each target as a dlopen() by this program (default for frameworks: the env's python).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON (schema in README.rst).")
@click.option("-v", "--verbose", is_flag=True, help="Show the whole dependency tree of every target.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the ELF facts cache.")
def scan(targets: tuple[str, ...], prefix: Optional[str], python: Optional[str], caller: Optional[str],
         as_json: bool, verbose: bool, no_cache: bool) -> None:
    """Resolve every dependency of TARGETS (files or folders) exactly as glibc's loader would.

    Without TARGETS: the GPU frameworks of the active Python environment, or the machine's
    CUDA installation when it has none.
    """
    from .factstore import FactsStore
    from .report import render_human, to_json
    from .scan import run_scan

    if prefix and python:
        raise click.UsageError("--env and --python name the same thing: give one")
    log = get_logger()
    store = FactsStore() if no_cache else FactsStore.default()
    if store.load_problem:
        log.warning("facts cache ignored", problem=store.load_problem)
    report = run_scan(targets, store=store, caller=caller, prefix=prefix, python=python)
    problem = store.save()
    if problem:
        log.warning("facts cache not saved", problem=problem)
    log.info("scan finished", targets=len(report.targets), problems=len(report.problems), parsed=store.parsed)
    if as_json:
        click.echo(json.dumps(to_json(report), separators=(",", ":")))
    else:
        render_human(report, sys.stdout, verbose)
    sys.exit(EXIT_OK if report.healthy else EXIT_PROBLEMS)


if __name__ == "__main__":  # pragma: no cover
    main()
