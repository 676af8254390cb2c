"""``libdoctor watch``: re-verify after conda, pip, CUDA, ldconfig or driver changes.

A watchdog observer watches every folder that can change a verdict (the search folders in play,
``/etc`` for ``ld.so.cache`` renames, ``/etc/ld.so.conf.d``, the environments' ``lib``,
``conda-meta`` and site-packages, ``/usr/local`` for new ``cuda-*`` trees, the driver's folder).
A burst of events is one re-verification (debounced); facts of unchanged files come from the
store, so only changed objects are parsed again.  A regression or a recovery is one structlog
event naming the problem ids and the paths that changed.
"""
from __future__ import annotations

import errno
import fcntl
import os
import queue
import signal
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from ..errors import LibdoctorError, UsageError
from ..loader.factstore import FactsStore
from ..repair.fix import apply_plan
from ..repair.statedir import state_folder
from ..rules.base import Finding
from ..rules.facts import ScanReport
from ..scan import grade_repairs, run_scan
from ..targets import active_environment
from .config import Config
from .sdnotify import notify

POLL_SECONDS = 0.2  # how often the main loop looks at the stop flag: SIGTERM ends the run well within 2 s
MAX_BURST_FACTOR = 10  # a burst is closed after debounce * this, even if events keep coming
IGNORED_EVENTS = ("opened", "closed", "closed_no_write")


def problem_id(problem: Finding) -> str:
    if not problem.is_problem:
        return f"{problem.rule}:{problem.message}"
    return f"{problem.kind}:{problem.soname or '-'}:{problem.target}"


def in_words(problems: Iterable[Finding], report: ScanReport, label: str, recovered: bool = False) -> str:
    """"libcudnn.so.7 no longer found: tensorflow-gpu 1.14.0 cannot use the GPU" (ids stay in the fields)."""
    phrases = []
    for problem in problems:
        name = problem.soname or os.path.basename(problem.target)
        if problem.kind in ("missing", "missing-dlopen"):
            phrases.append(f"{name} found again" if recovered else f"{name} no longer found")
        elif problem.kind == "impostor":
            phrases.append(f"{name} is the right library again" if recovered else problem.message.split(":")[0])
        else:
            phrases.append(f"fixed: {problem.message}" if recovered else problem.message)
    text = "; ".join(dict.fromkeys(phrases)) or ("problems resolved" if recovered else "problems")
    unusable = [f.info.label for f in report.frameworks if f.gpu_usable is False and f.info.cuda_build]
    if unusable and not recovered:
        text += f": {', '.join(unusable)} cannot use the GPU"
    elif recovered and report.healthy:
        text += f": {label} is healthy again"
    return text


@dataclass(frozen=True)
class Unit:
    """One thing to keep healthy: a Python environment, or a set of files and folders."""

    label: str
    targets: tuple[str, ...] = ()
    prefix: Optional[str] = None

    @property
    def described(self) -> str:
        """What a person calls it: the environment, or the files and folders watched."""
        return ", ".join(self.targets) if self.targets else self.label


def units_of(config: Config, targets: tuple[str, ...], environments: tuple[str, ...]) -> list[Unit]:
    units = [Unit(os.path.abspath(p), prefix=os.path.abspath(p)) for p in environments + config.environments]
    all_targets = tuple(targets) + config.targets
    if all_targets:
        units.append(Unit("targets", targets=tuple(os.path.abspath(t) for t in all_targets)))
    if not units:
        if not active_environment():
            raise UsageError("nothing to watch: give TARGETS or --env, or list environments in the configuration "
                             "(libdoctor systemd install writes /etc/libdoctor/config.toml with the ones it finds)")
        units.append(Unit("active environment"))
    return units


def _existing(folder: str) -> Optional[str]:
    """``folder`` or its nearest existing ancestor (so its creation is seen)."""
    path = os.path.abspath(folder)
    while path and not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    return path or None


def watch_folders(reports: list[ScanReport], units: list[Unit]) -> set[str]:
    folders = {"/etc", "/etc/ld.so.conf.d", "/usr/local"}
    for report in reports:
        env = report.env
        folders.update(f for f in env.library_path if f)
        if env.cache is not None:
            folders.update(env.cache.folders())
        for target in report.targets:
            folders.add(os.path.dirname(os.path.abspath(target.target.path)))
            for resolution in target.result.relevant_resolutions():
                for source in resolution.sources:
                    folders.update(env.absolute(f.folder) for f in source.folders if f.folder)
        python_env = report.discovery.environment
        if python_env is not None:
            folders.update({os.path.join(python_env.prefix, "lib"), os.path.join(python_env.prefix, "conda-meta")})
            for site in python_env.site_packages:
                folders.add(site)
                nvidia = os.path.join(site, "nvidia")
                if os.path.isdir(nvidia):
                    folders.update(os.path.join(nvidia, n, "lib") for n in os.listdir(nvidia))
        if report.driver is not None and report.driver.libcuda:
            folders.add(os.path.dirname(report.driver.libcuda))
    for unit in units:
        if unit.prefix:
            folders.add(unit.prefix)
    return {e for e in (_existing(f) for f in folders) if e}


class _Handler:
    """watchdog handler: every relevant event is queued for the main loop; a watched folder that is deleted or
    moved itself is marked to be watched anew (its inotify watch is gone or follows the old inode)."""

    def __init__(self, events: "queue.Queue[str]", ignored: tuple[str, ...], rearm: set[str]) -> None:
        self.events = events
        self.ignored = ignored
        self.rearm = rearm

    def dispatch(self, event) -> None:  # noqa: ANN001 - watchdog's event type
        if event.event_type in IGNORED_EVENTS:
            return
        paths = [event.src_path] + ([event.dest_path] if getattr(event, "dest_path", "") else [])
        for path in paths:
            path = os.fsdecode(path)
            if event.event_type in ("deleted", "moved"):
                self.rearm.add(path)
            if not path.startswith(self.ignored):
                # A folder's own "modified" (its entries or attributes changed) is marked with a trailing "/":
                # where an event names the entry itself, that one says more (see entries_changed).
                folder_event = event.event_type == "modified" and event.is_directory
                self.events.put(path.rstrip("/") + "/" if folder_event else path)


class Stop(BaseException):
    """SIGTERM during a verification: ends it at once (nothing it does is half-written)."""


def entries_changed(queued: list[str]) -> list[str]:
    """The changed paths of a burst: a folder's "modified" is left out when an event of the burst names an
    entry of that folder (a created, deleted or moved file says which name changed); alone, it stands for the
    folder."""
    named = {os.path.dirname(p) for p in queued if not p.endswith("/")}
    kept = [p for p in queued if not p.endswith("/")]
    kept += [p.rstrip("/") or "/" for p in queued if p.endswith("/") and (p.rstrip("/") or "/") not in named]
    return list(dict.fromkeys(kept))


def identity(folder: str) -> Optional[tuple[int, int]]:
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Watcher:
    def __init__(self, config: Config, units: list[Unit], store: FactsStore, root: str, log,  # noqa: ANN001
                 load_config: Optional[Callable[[], Config]] = None,
                 units_for: Optional[Callable[[Config], list[Unit]]] = None) -> None:
        self.config = config
        self.units = units
        self.store = store
        self.root = root
        self.log = log
        self.load_config = load_config
        self.units_for = units_for  # the units a reloaded configuration names
        self.events: "queue.Queue[str]" = queue.Queue()
        self.previous: dict[str, set[str]] = {}
        self.previous_problems: dict[str, dict[str, Finding]] = {}
        self.processes: list = []  # the last `ps` reports, for the metrics
        self.reports: dict[str, ScanReport] = {}
        self.stopping = False
        self.reload = False
        self.last_heal = float("-inf")
        self.observer = None
        self.polling = False
        self.scheduled: dict[str, object] = {}
        self.identities: dict[str, Optional[tuple[int, int]]] = {}  # watched folder -> (dev, ino) when scheduled
        self.rearm: set[str] = set()  # folders deleted or moved since: their watches are renewed
        self.verifying = False
        self.heal_failures = 0
        self.verifications = 0
        self.seen_processes: set[tuple[int, str]] = set()

    # -- verification --------------------------------------------------------------------

    def scan_unit(self, unit: Unit, changed: tuple[str, ...] = ()) -> ScanReport:
        """The unit verified again: only the loads that consulted a changed path are resolved anew."""
        slow = os.environ.get("LIBDOCTOR_TEST_VERIFY_SECONDS")  # lets tests stop a daemon mid-verification
        if slow:
            time.sleep(float(slow))
        return run_scan(unit.targets, store=self.store, prefix=unit.prefix, previous=self.reports.get(unit.label),
                        in_place=self.config.in_place, heal=True, root=self.root, grading=False,
                        changed=tuple(p for p in changed if os.path.isabs(p)) if changed else ())

    def verify(self, changed: list[str]) -> bool:
        """Verify every unit; log regressions and recoveries; heal; write metrics.  True if healthy."""
        started = time.monotonic()
        self.verifications += 1
        total = 0
        healthy = True
        for unit in self.units:
            self.verifying = True
            try:
                if self.stopping:
                    raise Stop
                report = self.scan_unit(unit, tuple(changed))
            finally:
                self.verifying = False
            self.reports[unit.label] = report
            healthy &= report.healthy
            problems = {problem_id(p): p for p in report.problems + tuple(f for f in report.findings if f.is_error)}
            ids = set(problems)
            total += len(ids)
            before = self.previous.get(unit.label)
            if before is None:
                if ids:
                    self.log.warning("problems", env=unit.label, findings=sorted(ids),
                                     summary=in_words(problems.values(), report, unit.label))
            else:
                if ids - before:
                    self.log.warning("regression", env=unit.label, findings=sorted(ids - before),
                                     summary=in_words([problems[i] for i in sorted(ids - before)], report, unit.label),
                                     changed=changed[:20], changed_count=len(changed))
                if before - ids:  # as loud as a regression: the person who fixed it wants to see it worked
                    old = self.previous_problems.get(unit.label, {})
                    self.log.warning("recovery", env=unit.label, resolved=sorted(before - ids),
                                     summary=in_words([old[i] for i in sorted(before - ids) if i in old], report,
                                                      unit.described, recovered=True),
                                     changed=changed[:20], changed_count=len(changed))
            self.previous[unit.label] = ids
            self.previous_problems[unit.label] = problems
        self.log.info("verified", units=len(self.units), problems=total, changed_count=len(changed),
                      seconds=round(time.monotonic() - started, 3))
        if not healthy and self.config.heal == "safe" and self.heal():
            return self.verify(["(healed)"])
        self.check_processes()
        self.write_metrics()
        return healthy

    def heal(self) -> bool:
        """Apply repairs graded safe, through fix --apply's code; at most one heal per heal_interval."""
        now = time.monotonic()
        if now - self.last_heal < self.config.heal_interval:
            self.log.info("heal postponed", seconds_left=round(self.config.heal_interval - (now - self.last_heal), 1))
            return False
        self.last_heal = now
        healed = False
        for unit in self.units:
            report = self.reports.get(unit.label)
            if report is None or report.healthy:
                continue
            try:
                grade_repairs(report, self.store, self.root)  # the verdict was told ungraded: grade to heal
                self.log.info("healing", env=unit.label, changes=len(report.diagnosis.chosen)
                              if report.diagnosis else 0)
                if report.diagnosis is None or not report.diagnosis.chosen:
                    continue  # the daemon's scans choose with the heal policy: safe additions only
                outcome = apply_plan(report, self.root, stop=lambda: self.stopping, healing=True)
            except (LibdoctorError, OSError) as exc:  # a heal that cannot be made is reported, never fatal
                self.heal_failures += 1
                self.log.error("heal failed", env=unit.label, reason=str(exc), failures=self.heal_failures)
                continue
            if outcome.created:
                healed = True
                self.log.warning("healed", env=unit.label, run_id=outcome.run_id, created=outcome.created)
            for refused in outcome.refused:
                self.log.warning("heal refused", env=unit.label, reason=refused)
        return healed

    def write_metrics(self) -> None:
        if not self.config.metrics_file:
            return
        from .metrics import write_metrics

        try:
            write_metrics(self.config.metrics_file, list(self.reports.items()), self.processes)
        except (OSError, LibdoctorError) as exc:
            self.log.error("metrics not written", path=self.config.metrics_file,
                           error=getattr(exc, "strerror", None) or str(exc))

    def check_processes(self) -> None:
        from .ps import scan_processes

        try:
            processes = self.processes = scan_processes()
        except Exception as exc:  # noqa: BLE001 - a failing process check must not stop the daemon
            self.log.error("process check failed", error=repr(exc))
            return
        for process in processes:
            for mapped in process.stale:
                key = (process.pid, mapped.path)
                if key not in self.seen_processes:
                    self.seen_processes.add(key)
                    self.log.warning("process maps a replaced library: restart it", pid=process.pid,
                                     name=process.name, path=mapped.path,
                                     state="deleted" if mapped.deleted else "replaced")
            for impostor in process.impostors:
                key = (process.pid, impostor)
                if key not in self.seen_processes:
                    self.seen_processes.add(key)
                    self.log.warning("process uses an impostor library", pid=process.pid, name=process.name,
                                     summary=impostor)
            key = (process.pid, "on-cpu")
            if process.on_cpu and key not in self.seen_processes:
                self.seen_processes.add(key)
                self.log.warning("framework process without a CUDA runtime: it computes on the CPU",
                                 pid=process.pid, name=process.name, frameworks=list(process.frameworks))

    # -- watching ------------------------------------------------------------------------

    def _observer(self):  # noqa: ANN202
        if not self.polling:
            from watchdog.observers import Observer

            try:
                return Observer()
            except OSError as exc:  # the user's inotify instances are used up (other watchers, editors)
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.ENOMEM):
                    raise
                self.log.warning("inotify instances ran out: polling instead", error=exc.strerror)
                self.polling = True
        from watchdog.observers.polling import PollingObserver

        return PollingObserver(timeout=2)

    def reschedule(self) -> None:
        """Watch what the last verification read; renew the watch of a folder deleted, recreated or moved
        (a new inode, or an event on the folder itself), and watch the nearest existing ancestor of one gone."""
        wanted = watch_folders(list(self.reports.values()), self.units)
        ignored = (self.root + os.sep, os.path.dirname(self.store.path or "/nonexistent/x") + os.sep)
        handler = _Handler(self.events, ignored, self.rearm)
        stale = {f for f in self.scheduled if f in self.rearm or identity(f) != self.identities.get(f)}
        self.rearm.clear()
        for folder in sorted((set(self.scheduled) - wanted) | stale):
            try:
                self.observer.unschedule(self.scheduled.pop(folder))
            except (KeyError, OSError, ValueError):
                pass
            self.identities.pop(folder, None)
        for folder in sorted(wanted - set(self.scheduled)):
            try:
                self.scheduled[folder] = self.observer.schedule(handler, folder, recursive=False)
                self.identities[folder] = identity(folder)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EMFILE) and not self.polling:
                    self.log.warning("inotify watches ran out: polling instead", folders=len(wanted))
                    self.switch_to_polling()
                    return
                self.log.info("folder not watched", folder=folder, error=exc.strerror)
        if stale:
            self.log.info("watches renewed", folders=sorted(stale)[:20], count=len(stale))
            for folder in sorted(stale & set(self.scheduled)):  # what changed before the new watch: seen now
                self.events.put(folder.rstrip("/") + "/")

    def switch_to_polling(self) -> None:
        self.observer.stop()
        self.polling = True
        self.scheduled = {}
        self.identities = {}
        self.observer = self._observer()
        self.observer.start()
        self.reschedule()

    def _signals(self) -> None:
        def stop(_signum: int, _frame: object) -> None:
            self.stopping = True
            if self.verifying:  # a long verification ends now, not when it is done (systemd waits 2 s, not 90)
                raise Stop

        def hup(_signum: int, _frame: object) -> None:
            self.reload = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)

    def _burst(self, first: str) -> list[str]:
        """Events until the folder goes quiet for ``debounce`` seconds (bounded)."""
        changed = {first: None}
        deadline = time.monotonic() + self.config.debounce * MAX_BURST_FACTOR
        while not self.stopping and time.monotonic() < deadline:
            try:
                changed[self.events.get(timeout=self.config.debounce)] = None
            except queue.Empty:
                break
        return list(changed)

    def run(self) -> int:
        self._signals()
        self.log.info("starting", units=len(self.units))  # signals handled from here on
        self.observer = self._observer()
        self.observer.start()
        try:
            self.verify([])
            self.reschedule()
            notify("READY=1")
            # At warning level so that the default log level shows it: a daemon says once what it watches.
            self.log.warning("watching", folders=len(self.scheduled), polling=self.polling, heal=self.config.heal,
                          summary=f"watching {len(self.scheduled)} folders for "
                                  f"{', '.join(u.described for u in self.units)}")
            next_periodic = time.monotonic() + self.config.interval
            while not self.stopping:
                if self.reload:
                    self.reload = False
                    if self.load_config is not None:
                        try:
                            config = self.load_config()
                            units = self.units_for(config) if self.units_for else self.units
                            self.config = config
                            self.log.info("configuration reloaded", sources=list(self.config.sources),
                                          units=len(units))
                            if units != self.units:  # a target or environment added or removed: verified now
                                self.units = units
                                self.verify(["(configuration reloaded)"])
                                self.reschedule()
                                self.log.info("settled", folders=len(self.scheduled))
                        except LibdoctorError as exc:
                            self.log.error("configuration not reloaded", error=str(exc))
                try:
                    first = self.events.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    if time.monotonic() >= next_periodic:
                        self.verify(["(periodic)"])
                        self.reschedule()
                        next_periodic = time.monotonic() + self.config.interval
                    continue
                changed = entries_changed(self._burst(first))
                if self.stopping:
                    break
                self.verify(changed)
                self.reschedule()
                self.log.info("settled", folders=len(self.scheduled))  # verified and watching what it read
                next_periodic = time.monotonic() + self.config.interval
        except Stop:
            self.log.info("stopped during a verification")
        finally:
            notify("STOPPING=1")
            self.verifying = False
            self.observer.stop()
            self.observer.join(timeout=1.0)
            self.store.save()
            self.log.info("stopped", verifications=self.verifications)
        return 0


class InstanceLock:
    """One watcher per state folder."""

    def __init__(self, root: str) -> None:
        state_folder(root)
        self.fd = os.open(os.path.join(root, "watch.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                          0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise LibdoctorError(f"another libdoctor watch is running for {root}") from None

    def release(self) -> None:
        os.close(self.fd)
