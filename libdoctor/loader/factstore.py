"""ELF facts read once, kept by file identity (device, inode, size, mtime_ns).

The store lives in memory for one process (the daemon keeps it between scans) and is saved
as a JSON file in the user's cache folder, so an unchanged tree parses nothing on the next
run.  JSON, not pickle: a cache file is data that must never run code, even when a root
process reads a folder someone else can write.  A corrupt or foreign file is ignored.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional, Union

from .. import errors
from ..files import make_folders, write_atomic
from .plainfiles import default_cache_dir, read_json
from .elffacts import (MAX_NAME_BYTES, MAX_NEEDED, PATH_MAX, ElfFacts, VersionDef, VersionNeed, open_regular,
                       read_elf_facts_fd)

Unfound = tuple[str, Optional[str], Optional[str], bool, Optional[int]]  # a lookup relocation needs that the file's
# own tables miss: (name, version, the file a version need names, weak, entries its version index lies past the
# object's version table or None)

FORMAT = "libdoctor-elf-facts"
FORMAT_VERSION = 7  # 2: VersionNeed.index; 3: the loader's own mapping checks (load_error, late_error); 4: has_versym;
# 5: keys carry the ctime (an inode reused with the same size and mtime is another file); 6: relocation facts;
# 7: a relocation's version index past the version table; ElfFacts.has_tls; an error's ELF header
MAX_ENTRIES = 50_000
MAX_CACHE_BYTES = 256 << 20  # a larger cache file is foreign or bloated: ignored and rebuilt
MAX_BINDINGS = 20_000
MAX_REMEMBERED_UNBOUND = 64  # per consumer: more unbound imports than this are recomputed, not stored

Key = tuple[int, int, int, int, int]  # (dev, ino, size, mtime_ns, ctime_ns)
Unserved = tuple[str, Optional[str], Optional[str]]  # an import none served: (name, version, file)
Entry = Union[ElfFacts, errors.ElfError]
_ERROR_TYPES = {cls.kind: cls for cls in (errors.ElfError, errors.NotElfError, errors.TruncatedError,
                                           errors.CorruptError, errors.UnsupportedError, errors.NotRegularError,
                                           errors.TooLargeError)}
_NAME_FIELDS = ("soname", "interp", "rpath", "runpath", "rpath_ignored", "load_error", "late_error")




def key_of(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _past(value: object) -> Optional[int]:
    """A cached ``version_past``: None or a non-negative int, else the entry is malformed."""
    if value is None or (type(value) is int and value >= 0):
        return value
    raise ValueError("malformed version_past")


def _key_text(key: Key) -> str:
    return ":".join(str(n) for n in key)


def _encode(entry: Entry) -> dict:
    if isinstance(entry, ElfFacts):
        return dataclasses.asdict(entry)
    refs = getattr(entry, "references", None)
    return {"error": entry.kind, "message": entry.message, "loader_message": entry.loader_message,
            "loader_skips": bool(getattr(entry, "loader_skips", False)), "references": list(refs or ()),
            "header": getattr(entry, "header", None)}


HEADER_FLAGS = ("little_endian", "ident_pad_zero")
HEADER_NUMBERS = ("elf_class", "machine", "osabi", "abiversion", "e_type", "ident_version", "e_version", "phentsize")


def _header(value: object) -> Optional[dict]:
    """An error's ELF header fields (what open_verify checks first), each checked by type."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != set(HEADER_FLAGS + HEADER_NUMBERS):
        raise TypeError("not an ELF header")
    return {k: _flag(v) if k in HEADER_FLAGS else _number(v) for k, v in value.items()}


def _text(value: object, optional: bool = False, limit: int = PATH_MAX + 1) -> Optional[str]:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise TypeError("not a string of the right length")
    return value


def _number(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not an integer")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError("not a boolean")
    return value


def _decode(data: object) -> Entry:
    """One cache entry, every field checked by type: anything else raises (the entry is then read again)."""
    if not isinstance(data, dict):
        raise TypeError("not an object")
    if "error" in data:
        kind, message, loader_message = (_text(data["error"]), _text(data["message"], limit=MAX_NAME_BYTES),
                                         _text(data["loader_message"], limit=MAX_NAME_BYTES))
        if kind == errors.LdScriptError.kind:
            refs = data["references"]
            error: errors.ElfError = errors.LdScriptError(message, tuple(_text(r) for r in refs))  # type: ignore
            error.loader_message = loader_message  # type: ignore[assignment]
        elif kind in _ERROR_TYPES:
            error = _ERROR_TYPES[kind](message, loader_message)  # type: ignore[arg-type]
        else:
            raise ValueError("unknown error kind")
        if _flag(data.get("loader_skips", False)):
            error.loader_skips = True  # type: ignore[attr-defined]
        header = _header(data.get("header"))
        if header is not None:
            error.header = header  # type: ignore[attr-defined]
        return error
    fields: dict = {}
    for spec in dataclasses.fields(ElfFacts):
        value = data[spec.name]
        if spec.name in _NAME_FIELDS:
            fields[spec.name] = _text(value, optional=True, limit=MAX_NAME_BYTES)
        elif spec.name in ("needed", "filters"):
            if not isinstance(value, list) or len(value) > MAX_NEEDED:
                raise TypeError("not a list of names")
            fields[spec.name] = tuple(_text(v) for v in value)
        elif spec.name == "version_needs":
            fields[spec.name] = tuple(VersionNeed(_text(v["file"]), _text(v["name"]), _number(v["hash"]),  # type: ignore
                                                  _flag(v["weak"]), _number(v["index"])) for v in value)
        elif spec.name == "version_defs":
            fields[spec.name] = tuple(VersionDef(_text(v["name"]), _number(v["hash"]), _number(v["flags"]),  # type: ignore
                                                 _number(v["index"])) for v in value)
        elif spec.type in ("bool", bool):
            fields[spec.name] = _flag(value)
        else:
            fields[spec.name] = _number(value)
    if len(data) != len(fields):
        raise ValueError("unknown fields")
    return ElfFacts(**fields)


class FactsStore:
    """Facts by file identity; ``path`` None keeps them in memory only."""

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path
        self._entries: dict[Key, Entry] = {}
        self._raw: dict[str, dict] = {}
        self._bindings: dict[str, dict] = {}  # consumer identity -> {"providers": [...], "unbound": [...]}
        self._strings: dict[str, list] = {}  # identity -> the lib*.so* strings of an object that can dlopen
        self._relocations: dict[str, dict] = {}  # identity -> {"error": ..., "unfound": [...]} (relocation_facts)
        self._dirty = False
        self.parsed = 0  # files parsed by this store (a warm run parses none)
        self.load_problem: Optional[str] = None
        if path:
            self._load(path)

    @classmethod
    def default(cls) -> "FactsStore":
        return cls(os.path.join(default_cache_dir(), f"elf-facts-v{FORMAT_VERSION}.json"))

    def _load(self, path: str) -> None:
        try:
            data = read_json(path, MAX_CACHE_BYTES, private=True)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            if data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
                raise ValueError("foreign cache file")
            raw = data["entries"]
            if not isinstance(raw, dict):
                raise ValueError("bad entries")
            self._raw = raw
            bindings = data.get("bindings", {})
            self._bindings = bindings if isinstance(bindings, dict) else {}
            strings = data.get("dlopen_strings", {})
            self._strings = strings if isinstance(strings, dict) else {}
            relocations = data.get("relocations", {})
            self._relocations = relocations if isinstance(relocations, dict) else {}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.load_problem = f"ignored cache file {path}: {exc}"
            self._raw = {}
            self._dirty = True

    def get_fd(self, fd: int, st: os.stat_result) -> Entry:
        """Facts of the open file ``fd`` whose ``fstat`` is ``st`` (read only on a miss)."""
        key = key_of(st)
        entry = self._entries.get(key)
        if entry is not None:
            return entry
        raw = self._raw.get(_key_text(key))
        if raw is not None:
            try:
                entry = _decode(raw)
            except (TypeError, KeyError, ValueError, AttributeError):
                entry = None  # foreign, corrupt or poisoned: read the file again, never believe it
        if entry is None:
            try:
                entry = read_elf_facts_fd(fd)
            except errors.ElfError as exc:
                entry = exc
            self.parsed += 1
            self._dirty = True
        self._entries[key] = entry
        return entry

    def get_path(self, path: str) -> Entry:
        """Facts of ``path`` (following links), or the error that explains why there are none."""
        try:
            fd = open_regular(path)
        except errors.ElfError as exc:
            return exc
        try:
            return self.get_fd(fd, os.fstat(fd))
        finally:
            os.close(fd)

    def binding(self, consumer: Key) -> Optional[tuple[frozenset[Key], tuple[Unserved, ...], Optional[str]]]:
        """What the last symbol check of ``consumer`` found: the providers that served its imports, the imports
        none served (name, version, the file a version need names), and the scope those were judged in (a
        digest, kept only when some import went unserved).  Anything malformed reads as nothing remembered."""
        raw = self._bindings.get(_key_text(consumer))
        try:
            providers = frozenset(tuple(int(n) for n in p.split(":")) for p in raw["providers"])  # type: ignore
            unbound = tuple((str(n), v if v is None else str(v), f if f is None else str(f))
                            for n, v, f in raw["unbound"])  # type: ignore
            scope = raw.get("scope")  # type: ignore[union-attr]
        except (TypeError, KeyError, ValueError, AttributeError):
            return None
        if any(len(p) != 5 for p in providers) or (scope is not None and not isinstance(scope, str)):
            return None
        return providers, unbound, scope  # type: ignore[return-value]

    def remember_binding(self, consumer: Key, providers: set[Key],
                         unbound: list[Unserved], scope: Optional[str] = None) -> None:
        if len(unbound) > MAX_REMEMBERED_UNBOUND:
            return
        value = {"providers": [_key_text(p) for p in sorted(providers)], "unbound": [list(u) for u in unbound],
                 "scope": scope}
        key = _key_text(consumer)
        if self._bindings.get(key) != value:  # a warm run that learns nothing new writes nothing
            self._bindings[key] = value
            self._dirty = True

    def dlopen_names(self, path: str) -> frozenset[str]:
        """:func:`~.symbols.probable_dlopen_names` of ``path``, read once per file identity."""
        try:
            key = _key_text(key_of(os.stat(path)))
        except OSError:
            return frozenset()
        raw = self._strings.get(key)
        if isinstance(raw, list) and all(isinstance(n, str) for n in raw):
            return frozenset(raw)
        from .symbols import probable_dlopen_names

        try:
            names = probable_dlopen_names(path)
        except errors.ElfError:
            names = frozenset()
        self._strings[key] = sorted(names)
        self._dirty = True
        return names

    def relocation(self, path: str) -> tuple[Optional[str], tuple[Unfound, ...]]:
        """:func:`~.binding.relocation_facts` of ``path``, worked out once per file identity."""
        from .binding import relocation_facts

        try:
            key = _key_text(key_of(os.stat(path)))
        except OSError:
            return None, ()
        raw = self._relocations.get(key)
        try:
            error = raw["error"]  # type: ignore[index]
            unfound = tuple((str(n), v if v is None else str(v), f if f is None else str(f), bool(w), _past(p))
                            for n, v, f, w, p in raw["unfound"])  # type: ignore[index]
            if error is None or isinstance(error, str):
                return error, unfound
        except (TypeError, KeyError, ValueError):
            pass  # not there, or malformed: worked out again
        error, unfound = relocation_facts(path)
        self._relocations[key] = {"error": error, "unfound": [list(u) for u in unfound]}
        self._dirty = True
        return error, unfound

    def save(self) -> Optional[str]:
        """Write the store atomically; returns a problem description instead of raising."""
        if not self.path or not self._dirty:
            return None
        entries = {_key_text(k): _encode(v) for k, v in self._entries.items()}
        for k, v in self._raw.items():
            if len(entries) >= MAX_ENTRIES:
                break
            entries.setdefault(k, v)
        folder = os.path.dirname(self.path)
        bindings = dict(list(self._bindings.items())[-MAX_BINDINGS:])
        strings = dict(list(self._strings.items())[-MAX_BINDINGS:])
        relocations = dict(list(self._relocations.items())[-MAX_BINDINGS:])
        data = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "entries": entries, "bindings": bindings,
                           "dlopen_strings": strings,
                           "relocations": relocations}, separators=(",", ":")).encode("utf-8")
        try:
            make_folders(folder, 0o700)
            write_atomic(self.path, data, 0o600)
        except (OSError, errors.LibdoctorError) as exc:
            return f"could not save the facts cache in {folder}: {getattr(exc, 'strerror', None) or exc}"
        self._dirty = False
        self._drop_older_formats(folder)
        return None

    def _drop_older_formats(self, folder: str) -> None:
        """The caches of older formats in our own folder are never read again: removed once the new one is saved."""
        for version in range(1, FORMAT_VERSION):
            old = os.path.join(folder, f"elf-facts-v{version}.json")
            if old != self.path and os.path.isfile(old) and not os.path.islink(old):
                try:
                    os.unlink(old)
                except OSError:
                    pass
