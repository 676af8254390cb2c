"""Each remaining rule on a fixture that triggers it (and does not fire where it should not)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from libdoctor.errors import UnsupportedError
from libdoctor.loader.elffacts import read_elf_facts
from libdoctor.loader.factstore import FactsStore
from libdoctor.loader.ldcache import parse_ld_cache
from libdoctor.loader.ldconf import parse_ld_conf
from libdoctor.loader.symbols import read_symbols
from libdoctor.rules import available_rules, run_rules
from libdoctor.rules.base import Placement, RuleContext
from libdoctor.scan import run_scan

from .conftest import ElfFactory, Judge


def findings_of(judge: Judge, targets: tuple[str, ...], cwd: Path, rule: str, extra: dict | None = None,
                **env_changes) -> list:
    env = judge.environment(str(cwd), extra, **env_changes)
    store = FactsStore()
    report = run_scan(targets, env=env, store=store)
    ctx = RuleContext(report, report.env, store, Placement(False, str(cwd / "shim")))
    findings, _ = run_rules(ctx, [r for r in available_rules() if r.id == rule])
    return findings


def test_shadowing_older_copy_first(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    old = elf.lib("old/libcudart.so.11.0.194", soname="libcudart.so.11.0", defines=["c"])
    os.symlink(old.name, tmp_path / "old/libcudart.so.11.0")
    new = elf.lib("new/libcudart.so.11.8.89", soname="libcudart.so.11.0", defines=["c"])
    os.symlink(new.name, tmp_path / "new/libcudart.so.11.0")
    user = elf.lib("app/libuser.so", calls=["c"], link=[old], runpath=f"{tmp_path / 'old'}:{tmp_path / 'new'}")
    findings = findings_of(judge, (str(user),), tmp_path, "shadowing")
    assert len(findings) == 1 and "an older copy" in findings[0].title
    assert str(old) in findings[0].title and str(new) in findings[0].title
    user2 = elf.lib("app/libuser2.so", calls=["c"], link=[old], runpath=f"{tmp_path / 'new'}:{tmp_path / 'old'}")
    assert findings_of(judge, (str(user2),), tmp_path, "shadowing") == []  # the newer one wins: fine


def test_ldconfig_stale(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    elf.lib("conf/libstale.so.1", defines=["s"])
    conf = tmp_path / "ld.so.conf"
    conf.write_text(f"{tmp_path / 'conf'}\n")
    cache_file = tmp_path / "cache"
    subprocess.run(["ldconfig", "-X", "-C", str(cache_file), "-f", str(tmp_path / "empty.conf")], check=False,
                   capture_output=True)
    if not cache_file.exists():
        pytest.skip("ldconfig cannot write a cache here")
    cache = parse_ld_cache(cache_file.read_bytes(), str(cache_file))
    user = elf.lib("app/libuser.so")
    findings = findings_of(judge, (str(user),), tmp_path, "ldconfig-stale", conf=parse_ld_conf(str(conf)),
                           cache=cache)
    assert findings and "run ldconfig" in findings[0].title and findings[0].evidence == ("libstale.so.1",)
    # scan's own explanation says the same for a consumer of that library
    import io

    from libdoctor.report import render_human
    consumer = elf.lib("app/libconsumer.so", calls=["s"], link=[tmp_path / "conf/libstale.so.1"])
    env = judge.environment(str(tmp_path), conf=parse_ld_conf(str(conf)), cache=cache)
    report = run_scan((str(consumer),), env=env, store=FactsStore(), look_in=(str(tmp_path / "conf"),))
    out = io.StringIO()
    render_human(report, out)
    assert f"{tmp_path / 'conf'} is configured in ld.so.conf, but ld.so.cache has no entry: run ldconfig" in \
        out.getvalue()


def test_search_path_hazards(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o777)
    stub = elf.stub("libh.so.1", defines=["h"])
    elf.lib("open/libh.so.1", defines=["h"])
    user = elf.lib("app/libuser.so", calls=["h"], link=[stub], rpath="lib:" + str(tmp_path / "open"))
    findings = findings_of(judge, (str(user),), tmp_path, "search-path-hazard",
                           {"LD_LIBRARY_PATH": ":/usr/local/cuda/lib64"})
    titles = " | ".join(f.title for f in findings)
    assert "LD_LIBRARY_PATH ':/usr/local/cuda/lib64' has an empty element" in titles
    assert "element 'lib' is relative" in titles
    assert f"{tmp_path / 'open'} (rpath) is world-writable" in titles


def test_broken_file_in_a_search_folder(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    stub = elf.stub("libok.so.1", defines=["o"])
    elf.lib("libs/libok.so.1", defines=["o"])
    (tmp_path / "libs/libcudnn.so.8").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:"
                                                 + "0" * 64 + "\nsize 812345678\n")  # a Git LFS pointer
    os.symlink("libnothere.so.2.0", tmp_path / "libs/libnothere.so.2")
    user = elf.lib("app/libuser.so", calls=["o"], link=[stub], runpath=str(tmp_path / "libs"))
    titles = [f.title for f in findings_of(judge, (str(user),), tmp_path, "broken-file")]
    assert any("libcudnn.so.8" in t and "invalid ELF header" in t for t in titles)
    assert any("libnothere.so.2 is a dangling symlink" in t for t in titles)
    assert not any("libok.so.1" in t for t in titles)


def test_cuda_home_against_the_framework(judge: Judge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         elf: ElfFactory) -> None:
    from .test_frameworks import dist_info, make_env

    prefix, site = make_env(tmp_path / "env")
    elf.lib(site / "torch/lib/libtorch_cuda.so")
    (site / "torch/version.py").write_text("__version__ = '2.14.1+cu130'\ncuda = '13.0'\n")
    dist_info(site, "torch", "2.14.1", ["torch/lib/libtorch_cuda.so"])
    toolkit = tmp_path / "cuda-11.8"
    (toolkit / "include").mkdir(parents=True)
    (toolkit / "include/cuda.h").write_text("#define CUDA_VERSION 11080\n")
    monkeypatch.setenv("CUDA_HOME", str(toolkit))
    env = judge.environment(str(tmp_path))
    store = FactsStore()
    report = run_scan(prefix=str(prefix), env=env, store=store)
    ctx = RuleContext(report, report.env, store, Placement(False, str(tmp_path / "shim")))
    findings, _ = run_rules(ctx, [r for r in available_rules() if r.id == "framework-env"])
    warning = [f for f in findings if f.severity == "warning"]
    assert warning and "CUDA_HOME points to CUDA 11.8 but torch 2.14.1+cu130 uses CUDA 13.0" in warning[0].title


def test_symbols_match_nm(elf: ElfFactory) -> None:
    if not os.path.exists("/usr/bin/nm"):
        pytest.skip("nm is not installed")
    stub = elf.stub("libv.so.1", defines=["v_get"], version_script={"V_1.0": ["v_get"]})
    lib = elf.lib("libsym.so.1", calls=["v_get"], link=[stub], defines=["exported_a", "exported_b"],
                  version_script={"SYM_1": ["exported_a", "exported_b"]})
    table = read_symbols(str(lib))
    nm = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True).stdout
    assert {line.split()[-1].split("@")[0] for line in nm.splitlines() if line.strip()} == set(table.defined_names)
    assert ("exported_a", "SYM_1") in table.defined
    assert ("v_get", "V_1.0", "libv.so.1", False) in table.undefined


@pytest.mark.parametrize("offset,value,words", [(4, 3, "class"), (5, 3, "byte order")])
def test_unsupported_class_or_byte_order(elf: ElfFactory, tmp_path: Path, offset: int, value: int,
                                         words: str) -> None:
    data = bytearray(elf.lib("libx.so").read_bytes())
    data[offset] = value
    path = tmp_path / "libbad.so"
    path.write_bytes(bytes(data))
    with pytest.raises(UnsupportedError) as raised:
        read_elf_facts(str(path))
    assert words in str(raised.value)
