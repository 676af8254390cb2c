"""A framework's own loading sequence, as data, settled against the machine by asking the loader.

Some frameworks decide what they preload by what happened first: PyTorch loads
``libtorch_global_deps.so`` by path, then (by version) preloads the NVIDIA wheels only when that
failed on a CUDA library, or only NVRTC and nvJitLink when cudart came from a wheel, or every wheel
whenever cudart is mapped.  A :class:`PreloadPlan` states such a sequence; :func:`settled_preloads`
asks the resolver what the first load does and returns the paths the framework really preloads, in
its order.  Every later load sees them (an earlier load satisfies a later name by SONAME, as
``ld.so`` does).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional

from ..loader.resolver import LoadRequest, Resolver
from ..targets import CUDA_NAME


@dataclass(frozen=True)
class PreloadPlan:
    first: str  # loaded by path first (libtorch_global_deps.so)
    on_success: tuple[str, ...] = ()  # preloaded after it loads, when ``success_when`` matches
    success_when: str = ""  # a regex over the paths the first load maps ("" : never)
    on_failure: tuple[str, ...] = ()  # preloaded (then the first retried) when it fails on a CUDA library
    described: str = ""  # "torch 2.0-2.5: ..." as the report names the sequence

    @property
    def every_path(self) -> tuple[str, ...]:
        """Every path the sequence may preload, in order (before the loader has said which)."""
        paths = (self.first,) + self.on_success + self.on_failure
        return tuple(dict.fromkeys(p for p in paths if os.path.exists(p)))


def settled_preloads(plan: PreloadPlan, resolver: Resolver, python: Optional[str]) -> tuple[str, ...]:
    """The paths the framework preloads on this machine, in its order."""
    if not os.path.exists(plan.first):
        return ()
    result = resolver.request(LoadRequest(plan.first, python is not None, python))
    failed_on_cuda = result.root_error is not None or any(CUDA_NAME.match(r.name) for r in result.missing)
    if failed_on_cuda:
        return tuple(p for p in plan.on_failure if os.path.exists(p)) + (plan.first,)
    mapped = [o.path for o in result.objects[result.new_from:]] if result.objects else []
    if plan.success_when and any(re.search(plan.success_when, path) for path in mapped):
        return (plan.first,) + tuple(p for p in plan.on_success if os.path.exists(p))
    return (plan.first,)
