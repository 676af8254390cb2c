"""glibc's dynamic loader, as a pure function of an :class:`Environment` and the files.

The algorithm follows glibc 2.36 ``elf/dl-load.c`` (``_dl_map_object``, ``open_path``,
``open_verify``), ``elf/dl-deps.c`` (breadth-first loading) and ``elf/dl-version.c``
(version needs); ``shared/knowledge/loader-facts.md`` section 1 has the details and sources.
Every lookup keeps the ordered list of places it tried, each tagged with its source, so the
answer and its explanation are the same data.
"""
from __future__ import annotations

import dataclasses
import errno as errno_mod
import os
from dataclasses import dataclass, field
from typing import Optional

from .elffacts import ET_EXEC, PATH_MAX, ElfFacts, LoaderVerdict, loader_verdict
from .environment import Environment
from .factstore import FactsStore
from .fsview import FileView, Probe
from .searchpath import expand_dst, join, origin_of, origin_of_executable, search_folders

NAME_MAX = 255

# Source tags, in the order glibc consults them.
RPATH = "rpath"
LD_LIBRARY_PATH = "LD_LIBRARY_PATH"
RUNPATH = "runpath"
CACHE = "ld.so.cache"
SYSTEM = "system"
LOADED = "loaded"
DIRECT = "direct"
ROOT = "root"
INTERPRETER = "interpreter"
PRELOAD = "preload"

MODE_LIST = "list"  # ld.so --list FILE (what ldd does)
MODE_EXEC = "exec"  # the kernel starts FILE
MODE_DLOPEN = "dlopen"  # a running program calls dlopen(FILE)

NOT_FOUND = "cannot open shared object file: No such file or directory"
CONTINUE_ERRNOS = (errno_mod.ENOENT, errno_mod.EACCES, errno_mod.ENOTDIR)  # open_path searches on after these


@dataclass(frozen=True)
class FolderAttempt:
    """One search folder (with its hwcaps subfolders) tried for one name."""

    folder: str
    outcome: str  # found | absent | no such folder | skipped | unreadable | stopped | fatal
    detail: str = ""
    candidate: Optional[str] = None


@dataclass(frozen=True)
class SourceAttempt:
    """One search source (an RPATH, LD_LIBRARY_PATH, the cache, ...) and what it gave."""

    tag: str
    owner: Optional[str] = None  # the object whose RPATH/RUNPATH this is
    folders: tuple[FolderAttempt, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Resolution:
    """One request for a name: a DT_NEEDED entry, a preload, or a dlopen."""

    name: str
    requester: Optional[str]  # the requesting object's path, None for LD_PRELOAD
    path: Optional[str]  # the object the loader uses (its path as the loader records it)
    via: str  # the tag of the source that gave it, "loaded" when reused
    sources: tuple[SourceAttempt, ...] = ()
    error: Optional[str] = None
    fatal: bool = False

    @property
    def found(self) -> bool:
        return self.path is not None


@dataclass(frozen=True)
class LoadedObject:
    path: str  # the loader's l_name: the path it opened, textually
    realpath: str
    facts: ElfFacts
    requested_as: str  # the first name it was loaded under
    needed_by: Optional[str]
    via: str
    depth: int
    loader_index: Optional[int]  # position of the object that loaded it (RPATH chain)


@dataclass(frozen=True)
class VersionProblem:
    consumer: str
    provider: str
    file: str  # the name in the consumer's version needs
    version: str
    weak: bool
    missing_verdef: bool  # the provider defines no versions at all
    unknown_file: bool = False  # the need names a file that is neither loaded nor needed: dl-version.c asserts
    asserts: bool = True  # missing_verdef: binding a versioned symbol to it trips check_match's assertion

    @property
    def message(self) -> str:
        if self.unknown_file:
            return (f"{self.consumer}: its version need names {self.file!r}, which it does not load: ld.so aborts "
                    "(\"Inconsistency detected\", dl-version.c: Assertion `needed != NULL' failed)")
        if self.missing_verdef and self.asserts:
            return (f"{self.provider}: no version information available (required by {self.consumer}): ld.so aborts "
                    f"(\"Inconsistency detected\", dl-lookup.c check_match) when it binds a symbol of version "
                    f"`{self.version}' to it")
        if self.missing_verdef:
            return (f"{self.provider}: no version information available (required by {self.consumer}): a warning; "
                    "the loader binds its symbols anyway")
        weak = "weak " if self.weak else ""
        return f"{self.provider}: {weak}version `{self.version}' not found (required by {self.consumer})"

    @property
    def fatal(self) -> bool:
        """``ld.so --list`` only warns of a provider without version information; binding a versioned symbol to
        it trips ``check_match``'s assertion (glibc elf/dl-lookup.c, before 2.41) only when the provider has no
        version table at all and is the first definer of that symbol in the scope: then the run dies, exit 127."""
        if self.missing_verdef:
            return self.asserts
        return self.unknown_file or not self.weak


@dataclass(frozen=True)
class LoadResult:
    root: str
    mode: str
    objects: tuple[LoadedObject, ...]  # load order; in dlopen mode the caller's objects come first
    resolutions: tuple[Resolution, ...]  # every request, in the order the loader made them
    version_problems: tuple[VersionProblem, ...] = ()
    root_error: Optional[str] = None  # the root itself could not be loaded
    new_from: int = 0  # index of the first object this load added (dlopen mode)

    @property
    def missing(self) -> tuple[Resolution, ...]:
        return tuple(r for r in self.relevant_resolutions() if not r.found)

    @property
    def ok(self) -> bool:
        return self.root_error is None and not self.missing and not any(v.fatal for v in self.version_problems)

    def closure(self) -> tuple[LoadedObject, ...]:
        """The objects this root needs, each once, in load order (the root itself excluded)."""
        if self.mode != MODE_DLOPEN:
            return tuple(o for o in self.objects[1:])
        if self.root_error is not None or self.new_from >= len(self.objects):
            return ()
        wanted = {r.path for r in self._root_requests()} - {None}
        root = self.objects[self.new_from].path
        return tuple(o for o in self.objects if o.path in wanted and o.path != root)

    def _root_requests(self) -> list[Resolution]:
        """In dlopen mode: the requests the dlopened root needs, transitively, also through objects the
        program had loaded before (their own requests were made then)."""
        if self.new_from >= len(self.objects):
            return [r for r in self.resolutions if r.requester is not None and r.name == self.root]
        reached = {self.objects[self.new_from].path}
        chosen: set[int] = set()
        grew = True
        while grew:
            grew = False
            for index, resolution in enumerate(self.resolutions):
                if index not in chosen and resolution.requester in reached:
                    chosen.add(index)
                    if resolution.path and resolution.path not in reached:
                        reached.add(resolution.path)
                        grew = True
        return [r for i, r in enumerate(self.resolutions) if i in chosen]

    def relevant_resolutions(self) -> tuple[Resolution, ...]:
        if self.mode != MODE_DLOPEN:
            return self.resolutions
        return tuple(self._root_requests())


@dataclass(frozen=True)
class LoadRequest:
    """A load asked of the loader, kept so it can be asked again in another Environment: ``root`` started
    (or listed), or ``dlopen(root)`` by the running program ``caller`` (``via``, ``preloads`` and
    ``loaded_by`` as :meth:`Resolver.dlopen` takes them)."""

    root: str
    dlopen: bool = False
    caller: Optional[str] = None
    via: Optional[str] = None
    preloads: tuple[str, ...] = ()
    loaded_by: Optional[str] = None


class _Obj:
    """A link map while loading: mutable, turned into :class:`LoadedObject` at the end."""

    __slots__ = ("path", "realpath", "facts", "names", "identity", "loader", "origin", "requested_as",
                 "needed_by", "via", "depth", "index", "faked")

    def __init__(self, path: str, realpath: str, facts: ElfFacts, identity: Optional[tuple[int, int]],
                 loader: Optional["_Obj"], origin: str, requested_as: str, needed_by: Optional[str], via: str,
                 depth: int) -> None:
        self.path, self.realpath, self.facts, self.identity = path, realpath, facts, identity
        self.loader, self.origin, self.requested_as = loader, origin, requested_as
        self.needed_by, self.via, self.depth = needed_by, via, depth
        self.names = {requested_as, path}
        self.index = -1

    def frozen(self) -> LoadedObject:
        return LoadedObject(self.path, self.realpath, self.facts, self.requested_as, self.needed_by, self.via,
                            self.depth, self.loader.index if self.loader else None)


@dataclass
class _Search:
    """The outcome of searching one list of folders."""

    folders: list[FolderAttempt] = field(default_factory=list)
    found: Optional[tuple[str, Probe]] = None
    fatal: Optional[str] = None


class Resolver:
    """Loads roots the way ld.so does; one instance per environment and scan."""

    def __init__(self, env: Environment, store: Optional[FactsStore] = None) -> None:
        self.env = env
        self.view = FileView(store or FactsStore(), env.overlay, env.hidden)
        self.info = env.loader
        self._layouts: dict[str, tuple[tuple[str, str, object], ...]] = {}
        self.searches: dict[tuple[str, tuple[str, ...]], _Search] = {}

    # -- public entry points -------------------------------------------------------------

    def load(self, root: str, mode: str = MODE_LIST) -> LoadResult:
        """Load ``root`` as the main program: ``ld.so --list`` (``MODE_LIST``) or a real start."""
        state = _LoadState(self)
        main, error = state.map_root(root, mode)
        if main is None:
            return LoadResult(root, mode, (), (), root_error=error)
        state.preload(main)
        state.load_dependencies(0)
        return state.result(root, mode, 0)

    def dlopen(self, caller: str, target: str, via: Optional[str] = None, preloads: tuple[str, ...] = (),
               loaded_by: Optional[str] = None) -> LoadResult:
        """``caller`` runs (its own closure loaded), then calls ``dlopen(target)``.

        ``preloads``: objects the program dlopened earlier, in order (torch's ``_preload_cuda_deps``).
        ``via``: the object that makes the call, e.g. TensorFlow's ``libtensorflow_framework.so.N`` asking
        for ``libcudnn.so.7``: its RUNPATH/RPATH applies.  ``loaded_by``: the object the program dlopened
        that brought ``via`` in as a dependency (``_pywrap_tensorflow_internal.so``): without a RUNPATH on
        ``via``, glibc searches the RPATH of each object up that chain (``l_loader``), then the program's.
        """
        state = _LoadState(self)
        main, error = state.map_root(caller, MODE_EXEC if self.is_program(caller) else MODE_LIST)
        if main is None:
            return LoadResult(target, MODE_DLOPEN, (), (), root_error=f"caller {caller}: {error}")
        state.preload(main)
        state.load_dependencies(0)
        state.start_running()
        for path in preloads:
            start = len(state.objects)
            _resolution, obj = state.map_object(main, path, depth=1)
            if obj is not None and obj.index >= start:
                obj.via = PRELOAD
                state.load_dependencies(start)
        requester = main
        for hop in (loaded_by, via):
            if hop is None:
                continue
            known = state.loaded_file(hop)
            if known is not None:
                requester = known
                continue
            start = len(state.objects)
            resolution, obj = state.map_object(requester, hop, depth=requester.depth + 1)
            if obj is None:
                return state.result(target, MODE_DLOPEN, start, root_error=f"{hop}: {resolution.error}")
            state.load_dependencies(start)
            requester = obj
        first_new = len(state.objects)
        resolution, obj = state.map_object(requester, target, depth=requester.depth + 1)
        if obj is None:
            return state.result(target, MODE_DLOPEN, first_new, root_error=resolution.error)
        if obj.index < first_new:
            return state.result(target, MODE_DLOPEN, obj.index)
        state.load_dependencies(first_new)
        return state.result(target, MODE_DLOPEN, first_new)

    def request(self, request: LoadRequest) -> LoadResult:
        """Answer a :class:`LoadRequest`: a dlopen by its caller, or the root started as the kernel starts a
        program (a library: as ``ld.so --list`` loads it)."""
        if request.dlopen and request.caller:
            return self.dlopen(request.caller, request.root, via=request.via, preloads=request.preloads,
                               loaded_by=request.loaded_by)
        return self.load(request.root, MODE_EXEC if self.is_program(request.root) else MODE_LIST)

    def folder_layout(self, folder: str) -> tuple[tuple[str, str, object], ...]:
        """(textual path, absolute path, listing or errno) of each subfolder glibc tries, in order."""
        layout = self._layouts.get(folder)
        if layout is None:
            rows = []
            for sub in self.info.subdirs:
                where = f"{folder}/{sub}" if sub and folder else (sub or folder)
                key = self.env.absolute(where) if where else self.env.cwd
                rows.append((where, key, self.view.listing(key)))
            layout = self._layouts[folder] = tuple(rows)
        return layout

    def is_plain(self, folders: tuple[str, ...]) -> bool:
        """Every subfolder is a readable folder or plainly absent: no errno left over to matter."""
        for folder in folders:
            for _where, _key, names in self.folder_layout(folder):
                if not isinstance(names, frozenset) and names != errno_mod.ENOENT:
                    return False
        return True

    def is_program(self, path: str) -> bool:
        probe = self.view.probe(self.env.absolute(path))
        return probe.facts is not None and probe.facts.is_executable


class _LoadState:
    """One process image being built: the loaded objects and the loader's search state."""

    def __init__(self, resolver: Resolver) -> None:
        self.r = resolver
        self.env = resolver.env
        self.info = resolver.info
        self.view = resolver.view
        self.objects: list[_Obj] = []
        self.by_name: dict[str, _Obj] = {}
        self.by_soname: dict[str, _Obj] = {}
        self.by_identity: dict[tuple[int, int], _Obj] = {}
        self.resolutions: list[Resolution] = []
        self.rtld: Optional[_Obj] = None
        self.rtld_requested_at: Optional[int] = None
        self.folder_exists: dict[str, bool] = {}
        self.errno = errno_mod.ENOENT  # open_path reads the errno of the last failed attempt
        self.main: Optional[_Obj] = None
        self.running = False  # the program has started: what is mapped now is a dlopen
        self.stack_executable = False  # the process stack is executable (asked for at start-up)

    def start_running(self) -> None:
        """Start-up is over: an executable stack asked for by any object loaded so far was granted (the
        glibc.rtld.execstack tunable defaults to 1); from now on every load is a dlopen."""
        self.running = True
        self.stack_executable = any(o.facts.wants_execstack for o in self.objects if o is not self.rtld)

    def execstack_refusal(self, facts: ElfFacts) -> Optional[str]:
        """glibc 2.41's _dl_map_object_from_fd refuses to dlopen an object that asks for an executable stack while
        the stack is not executable (EINVAL); older releases made the stack executable."""
        if not self.running or not facts.wants_execstack or self.stack_executable:
            return None
        if not self.info.glibc_at_least((2, 41)):
            self.stack_executable = True
            return None
        return "cannot enable executable stack as shared object requires: Invalid argument"

    # -- bookkeeping ---------------------------------------------------------------------

    def add(self, obj: _Obj) -> _Obj:
        obj.index = len(self.objects)
        self.objects.append(obj)
        for name in obj.names:
            self.by_name.setdefault(name, obj)
        if obj.facts.soname:
            self.by_soname.setdefault(obj.facts.soname, obj)
        if obj.identity:
            self.by_identity.setdefault(obj.identity, obj)
        return obj

    def find_loaded(self, name: str) -> Optional[_Obj]:
        """``_dl_lookup_map``: the first loaded object answering to ``name`` or having it as SONAME."""
        hits = [o for o in (self.by_name.get(name), self.by_soname.get(name), self._rtld_match(name)) if o]
        return min(hits, key=lambda o: o.index) if hits else None

    def loaded_file(self, path: str) -> Optional[_Obj]:
        """The object already loaded from the file at ``path`` (by file identity, whatever its name)."""
        identity = self.view.probe(self.env.absolute(path)).identity
        return self.by_identity.get(identity) if identity else None

    def match_loaded(self, name: str) -> Optional[_Obj]:
        """``find_loaded``, and the object answers to ``name`` from now on (``add_name_to_object``)."""
        obj = self.find_loaded(name)
        if obj is not None:
            obj.names.add(name)
            self.by_name.setdefault(name, obj)
        return obj

    def _rtld_match(self, name: str) -> Optional[_Obj]:
        rtld = self.rtld
        if rtld is not None and name in (rtld.facts.soname, rtld.path):
            return rtld
        return None

    def origin(self, path: str, executed: bool) -> str:
        return origin_of_executable(path, self.env.cwd) if executed else origin_of(path, self.env.cwd)

    # -- the root ------------------------------------------------------------------------

    def map_root(self, root: str, mode: str) -> tuple[Optional[_Obj], Optional[str]]:
        probe = self.view.probe(self.env.absolute(root))
        if not probe.opened:
            return None, f"{root}: {os.strerror(probe.errno)}"
        if probe.is_dir:
            return None, f"{root}: is a folder"
        if probe.error is not None:
            return None, f"{root}: {probe.error.message}"
        facts = probe.facts
        assert facts is not None
        verdict = loader_verdict(facts, None, self.info.host)
        if verdict.action != "use":
            return None, f"{root}: {verdict.reason}"
        if facts.load_error or facts.late_error:
            return None, f"{root}: {facts.load_error or facts.late_error}"
        if not facts.dynamic:
            return None, f"{root}: not a dynamic object (statically linked)"
        executed = mode == MODE_EXEC
        main = _Obj(root, self.view.realpath(self.env.absolute(root)), facts,
                    None if executed else probe.identity, None, self.origin(root, executed), root, None, ROOT, 0)
        self.main = self.add(main)
        self._map_rtld(facts)
        return main, None

    def _map_rtld(self, main_facts: ElfFacts) -> None:
        """The loader itself is loaded before anything else, under PT_INTERP's name."""
        path = main_facts.interp or self.info.interpreter
        probe = self.view.probe(self.env.absolute(path))
        if probe.facts is None:
            return
        rtld = _Obj(path, self.view.realpath(path), probe.facts, probe.identity, None, origin_of(path, self.env.cwd),
                    path, None, INTERPRETER, 1)
        rtld.index = -2  # placed in the load order later, where it is first needed
        self.rtld = rtld
        if probe.identity:
            self.by_identity.setdefault(probe.identity, rtld)

    def preload(self, main: _Obj) -> None:
        for name, where in self.env.preloads:
            resolution, _obj = self.map_object(main, name, depth=1, preload=where)
            if not resolution.found:
                self.resolutions[-1] = dataclasses.replace(resolution, error=(
                    f"object '{name}' from {where} cannot be preloaded ({resolution.error}): ignored"))

    # -- breadth-first dependencies (elf/dl-deps.c) --------------------------------------

    def load_dependencies(self, start: int) -> None:
        queue_pos = start
        while queue_pos < len(self.objects):
            obj = self.objects[queue_pos]
            queue_pos += 1
            if obj is self.rtld:
                continue
            for name in obj.facts.needed:
                self.map_object(obj, name, depth=obj.depth + 1)

    def map_object(self, loader: _Obj, name: str, depth: int, preload: Optional[str] = None
                   ) -> tuple[Resolution, Optional[_Obj]]:
        requester = None if preload else loader.path
        known = self.match_loaded(name) if name or self.main is None else self.main  # "": the main map's l_name
        if known is not None:
            self._note_rtld_use(known)
            return self._record(Resolution(name, requester, known.path, LOADED)), known
        if len(os.fsencode(name)) > (PATH_MAX if "/" in name else NAME_MAX):  # every open fails: ENAMETOOLONG
            return self._record(Resolution(name, requester, None, "not found", (), (
                f"cannot open shared object file: File name too long (a name of {len(name)}+ bytes; the loader "
                "says \"Error 36\" and stops)"), True)), None
        if "/" in name:
            return self._map_direct(loader, name, requester, depth)
        sources, search = self._search(loader, name)
        if search.found is None:
            error = search.fatal or (self._other_class_error() if any(_other_class(s) for s in sources)
                                     else NOT_FOUND)
            return self._record(Resolution(name, requester, None, "not found", tuple(sources), error,
                                           bool(search.fatal))), None
        path, probe = search.found
        via = sources[-1].tag
        return self._admit(loader, name, requester, path, probe, via, tuple(sources), depth)

    def _map_direct(self, loader: _Obj, name: str, requester: Optional[str], depth: int
                    ) -> tuple[Resolution, Optional[_Obj]]:
        path = expand_dst(name, loader.origin, self.info.lib, self.info.platform)
        if path is None:
            return self._record(Resolution(name, requester, None, "not found", (SourceAttempt(DIRECT, note=(
                "a token in the name has no value here")),), NOT_FOUND)), None
        probe = self.view.probe(self.env.absolute(path))
        attempt = self._judge(path, probe)
        sources = (SourceAttempt(DIRECT, folders=(attempt,)),)
        if attempt.outcome != "found":
            error = attempt.detail if attempt.outcome == "fatal" else (
                self._other_class_error() if _other_class(sources[0]) else
                f"cannot open shared object file: {os.strerror(probe.errno or errno_mod.ENOENT)}")
            return self._record(Resolution(name, requester, None, "not found", sources, error,
                                           attempt.outcome == "fatal")), None
        return self._admit(loader, name, requester, path, probe, DIRECT, sources, depth)

    def _admit(self, loader: _Obj, name: str, requester: Optional[str], path: str, probe: Probe, via: str,
               sources: tuple[SourceAttempt, ...], depth: int) -> tuple[Resolution, Optional[_Obj]]:
        same_file = self.by_identity.get(probe.identity) if probe.identity else None
        if same_file is not None:  # _dl_map_object_from_fd: the same file under another name
            same_file.names.add(name)
            self.by_name.setdefault(name, same_file)
            self._note_rtld_use(same_file)
            return self._record(Resolution(name, requester, same_file.path, via, sources)), same_file
        facts = probe.facts
        assert facts is not None
        refusal = ("cannot dynamically load executable" if facts.e_type == ET_EXEC else facts.load_error
                   or ("cannot dynamically load position-independent executable" if facts.is_pie else None)
                   or facts.late_error or self.execstack_refusal(facts))
        if refusal:  # _dl_map_object_from_fd refuses the file it opened: the load stops here
            return self._record(Resolution(name, requester, None, "not found", sources, f"{path}: {refusal}",
                                           True)), None
        obj = self.add(_Obj(path, self.view.realpath(self.env.absolute(path)), facts, probe.identity, loader,
                            self.origin(path, False), name, requester, via, depth))
        return self._record(Resolution(name, requester, path, via, sources)), obj

    def _other_class_error(self) -> str:
        """glibc names the class the loader is not: a 64-bit loader says ELFCLASS32."""
        return f"wrong ELF class: ELFCLASS{32 if self.info.host.elf_class == 64 else 64}"

    def _record(self, resolution: Resolution) -> Resolution:
        self.resolutions.append(resolution)
        return resolution

    def _note_rtld_use(self, obj: _Obj) -> None:
        if obj is self.rtld and self.rtld_requested_at is None:
            self.rtld_requested_at = len(self.objects)

    # -- the search (elf/dl-load.c _dl_map_object) ---------------------------------------

    def _search(self, loader: _Obj, name: str) -> tuple[list[SourceAttempt], _Search]:
        sources: list[SourceAttempt] = []
        info = self.info
        main = self.main
        assert main is not None
        if loader.facts.runpath is None:
            chain_has_main = False
            obj: Optional[_Obj] = loader
            while obj is not None:
                if obj.facts.rpath:
                    chain_has_main |= obj is main
                    hit = self._try_source(sources, RPATH, obj, obj.facts.rpath, ":", name)
                    if hit:
                        return sources, hit
                obj = obj.loader
            if not chain_has_main and main.facts.rpath:
                hit = self._try_source(sources, RPATH, main, main.facts.rpath, ":", name)
                if hit:
                    return sources, hit
            if not sources:
                sources.append(SourceAttempt(RPATH, note="none in the chain of requesting objects"))
        else:
            sources.append(SourceAttempt(RPATH, loader.path, note="skipped: the requesting object has DT_RUNPATH"))
        if self.env.library_path:
            hit = self._try_source(sources, LD_LIBRARY_PATH, main, self.env.ld_library_path, ":;", name)
            if hit:
                return sources, hit
        else:
            sources.append(SourceAttempt(LD_LIBRARY_PATH, note="not set"))
        if loader.facts.runpath:
            hit = self._try_source(sources, RUNPATH, loader, loader.facts.runpath, ":", name)
            if hit:
                return sources, hit
        nodeflib = loader.facts.nodeflib
        hit = self._try_cache(sources, name, nodeflib)
        if hit:
            return sources, hit
        if nodeflib:
            sources.append(SourceAttempt(SYSTEM, loader.path, note="skipped: the requesting object has DF_1_NODEFLIB"))
            return sources, _Search()
        search = self._open_path(name, info.system_dirs)
        sources.append(SourceAttempt(SYSTEM, folders=tuple(search.folders)))
        return sources, search

    def _try_source(self, sources: list[SourceAttempt], tag: str, owner: _Obj, value: Optional[str],
                    separators: str, name: str) -> Optional[_Search]:
        folders = search_folders(value, separators, owner.origin, self.info.lib, self.info.platform)
        search = self._open_path(name, folders)
        sources.append(SourceAttempt(tag, None if tag == LD_LIBRARY_PATH else owner.path, tuple(search.folders)))
        return search if (search.found or search.fatal) else None

    def _try_cache(self, sources: list[SourceAttempt], name: str, nodeflib: bool) -> Optional[_Search]:
        if self.env.cache is None:
            sources.append(SourceAttempt(CACHE, note=self.env.cache_problem or "no ld.so.cache"))
            return None
        path = self.env.cache_lookup.lookup(name)
        if path is None:
            sources.append(SourceAttempt(CACHE, note="no entry"))
            return None
        if nodeflib and any(path.startswith(d.rstrip("/") + "/") for d in self.info.system_dirs):
            sources.append(SourceAttempt(CACHE, note=f"entry {path} ignored: DF_1_NODEFLIB"))
            return None
        probe = self.view.probe(path)
        attempt = self._judge(path, probe)
        sources.append(SourceAttempt(CACHE, folders=(attempt,)))
        if attempt.outcome == "found":
            return _Search(found=(path, probe))
        if attempt.outcome == "fatal":
            return _Search(fatal=attempt.detail)
        return None

    def _judge(self, path: str, probe: Probe) -> FolderAttempt:
        folder = os.path.dirname(path)
        if probe.is_dir:
            return FolderAttempt(folder, "fatal", f"{path}: cannot read file data: Is a directory", path)
        if not probe.opened:
            outcome = "unreadable" if probe.errno == errno_mod.EACCES else "absent"
            return FolderAttempt(folder, outcome, os.strerror(probe.errno), path)
        verdict: LoaderVerdict = loader_verdict(probe.facts, probe.error, self.info.host)
        if verdict.action == "use":
            return FolderAttempt(folder, "found", "", path)
        if verdict.action == "skip":
            return FolderAttempt(folder, "skipped", verdict.reason, path)
        return FolderAttempt(folder, "fatal", f"{path}: {verdict.reason}", path)

    def _open_path(self, name: str, folders: tuple[str, ...]) -> _Search:
        """``open_path``, remembered across loads where its answer cannot depend on earlier lookups."""
        key = (name, folders)
        known = self.r.searches.get(key)
        if known is not None:
            self.errno = errno_mod.ENOENT
            return _Search(list(known.folders), known.found, known.fatal)
        search = self._open_path_uncached(name, folders)
        if self.r.is_plain(folders) and self.errno == errno_mod.ENOENT:
            self.r.searches[key] = search
        return search

    def _open_path_uncached(self, name: str, folders: tuple[str, ...]) -> _Search:
        """``open_path``: each folder with its hwcaps subfolders, first hit wins."""
        search = _Search()
        for folder in folders:
            attempt, probe = self._try_folder(name, folder)
            search.folders.append(attempt)
            if attempt.outcome == "found":
                assert attempt.candidate is not None and probe is not None
                search.found = (attempt.candidate, probe)
                return search
            if attempt.outcome == "fatal":
                search.fatal = attempt.detail
                return search
            if attempt.outcome != "no such folder" and self.errno not in CONTINUE_ERRNOS:
                # glibc gives up on the rest of this list (open_path returns -1) when some subfolder
                # of this folder exists and the last open failed otherwise (a symlink loop, say).
                search.folders[-1] = _replace_attempt(attempt, "stopped", os.strerror(self.errno))
                return search
        return search

    def _try_folder(self, name: str, folder: str) -> tuple[FolderAttempt, Optional[Probe]]:
        seen_folder = False
        skipped: Optional[FolderAttempt] = None
        for where, key, names in self.r.folder_layout(folder):
            exists = self.folder_exists.get(key)
            if exists is False:
                continue  # glibc remembers folders that do not exist and skips them
            if isinstance(names, frozenset):
                self.folder_exists[key] = seen_folder = True
                if name not in names:
                    self.errno = errno_mod.ENOENT
                    continue
            elif names != errno_mod.EACCES:  # not a folder: open fails, then glibc's stat check
                self.errno = names  # type: ignore[assignment]
                stat_errno = self.view.stat_errno(key)
                self.folder_exists[key] = False
                if stat_errno:
                    self.errno = stat_errno
                continue
            path = join(where, name)
            probe = self.view.probe(self.env.absolute(path))
            attempt = self._judge(path, probe)
            if attempt.outcome in ("found", "fatal"):
                self.folder_exists[key] = True
                return FolderAttempt(folder, attempt.outcome, attempt.detail, path), probe
            if attempt.outcome == "skipped":
                skipped = skipped or FolderAttempt(folder, "skipped", attempt.detail, path)
                self.errno = errno_mod.ENOENT
            else:
                self.errno = probe.errno
            self.folder_exists[key] = seen_folder = True
        if skipped:
            return skipped, None
        if not seen_folder:
            return FolderAttempt(folder, "no such folder"), None
        if self.errno == errno_mod.EACCES:
            return FolderAttempt(folder, "unreadable", "permission denied", join(folder, name)), None
        return FolderAttempt(folder, "absent"), None

    # -- versions (elf/dl-version.c) -----------------------------------------------------

    def _local_scope(self, obj: _Obj) -> set[str]:
        """Every name requested in ``obj``'s own dependency closure, and the objects' own names: what this
        glibc's ``find_needed`` matches a version need's file against (``l_local_scope``)."""
        names: set[str] = {"", obj.path} | ({obj.facts.soname} if obj.facts.soname else set())  # "": the main map
        queue, seen = [obj.path], {obj.path}
        while queue:
            path = queue.pop()
            for resolution in self.resolutions:
                if resolution.requester != path:
                    continue
                names.add(resolution.name)
                if resolution.path and resolution.path not in seen:
                    seen.add(resolution.path)
                    queue.append(resolution.path)
        return names

    def _check_match_asserts(self, consumer: _Obj, provider: _Obj, file_name: str) -> bool:
        """glibc before 2.41 (commit "elf: Remove version assert in check_match") asserts when a versioned import
        of ``consumer`` from ``file_name`` is first found in ``provider`` and ``provider`` has no DT_VERSYM; an
        object earlier in the scope that defines the symbol answers first, and a version table (DT_VERSYM
        without DT_VERDEF) makes check_match accept it."""
        from .symbols import symbols_of

        if provider.facts.has_versym or self.info.glibc_at_least((2, 41)):
            return False
        imports = symbols_of(self.env.absolute(consumer.path))
        if imports is None:
            return True
        wanted = {(name, version) for name, version, file, _weak in imports.undefined if version and file == file_name}
        for name, version in sorted(wanted):
            for obj in self.objects:  # the global scope, in load order
                table = symbols_of(self.env.absolute(obj.path))
                if table is None or name not in table.defined_names:
                    continue
                if obj is provider:
                    return True
                if (not obj.facts.has_versym or (name, version) in table.defined
                        or (name, None) in table.defined):
                    break  # check_match accepts it here: the lookup never reaches the provider
        return False

    def check_versions(self, start: int) -> list[VersionProblem]:
        problems = []
        for obj in self.objects[start:]:
            needs: dict[str, list] = {}
            for need in obj.facts.version_needs:
                needs.setdefault(need.file, []).append(need)
            scope: Optional[set[str]] = None  # walked once, only for a need beyond the object's own DT_NEEDED
            for file_name, wanted in needs.items():
                # dl-version.c find_needed: any loaded object answering to the name (_dl_name_match_p: a name it
                # was loaded under, not its SONAME alone), then the object's own search list; neither: the
                # assertion `needed != NULL' (2.31, 2.36, 2.41 alike)
                provider = self.by_name.get(file_name) or self._rtld_match(file_name)
                if provider is None and file_name in obj.facts.needed:
                    provider = self.find_loaded(file_name)
                if provider is None and file_name not in obj.facts.needed:
                    scope = self._local_scope(obj) if scope is None else scope
                    if file_name not in scope:
                        problems.append(VersionProblem(obj.path, "", file_name, wanted[0].name, False, False, True))
                        continue
                if provider is None:
                    continue  # missing altogether: reported as not found
                if not provider.facts.has_verdef:
                    problems.append(VersionProblem(obj.path, provider.path, file_name, wanted[0].name, False, True,
                                                   asserts=self._check_match_asserts(obj, provider, file_name)))
                    continue
                defined = provider.facts.defined_versions
                for need in wanted:
                    if (need.name, need.hash) not in defined:
                        problems.append(VersionProblem(obj.path, provider.path, file_name, need.name, need.weak,
                                                       False))
        return problems

    # -- the result ----------------------------------------------------------------------

    def result(self, root: str, mode: str, new_from: int, root_error: Optional[str] = None) -> LoadResult:
        version_problems = self.check_versions(new_from) if root_error is None else []
        ordered = list(self.objects)
        if self.rtld is not None and self.rtld_requested_at is not None:
            # rtld.c moves the loader's own map to where the breadth-first list first names it,
            # and drops it from the list when nothing names it.
            at = self.rtld_requested_at
            ordered.insert(at, self.rtld)
            if at <= new_from:
                new_from += 1
        for index, obj in enumerate(ordered):
            obj.index = index
        frozen = tuple(obj.frozen() for obj in ordered)
        return LoadResult(root, mode, frozen, tuple(self.resolutions), tuple(version_problems), root_error, new_from)


def _other_class(source: SourceAttempt) -> bool:
    return any(f.outcome == "skipped" and "class" in f.detail for f in source.folders)


def _replace_attempt(attempt: FolderAttempt, outcome: str, detail: str) -> FolderAttempt:
    return FolderAttempt(attempt.folder, outcome, detail, attempt.candidate)
