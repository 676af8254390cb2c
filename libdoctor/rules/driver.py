"""driver: a CUDA build on a machine whose NVIDIA driver is absent, does not fit, or shows no device.

One cause for the machine, naming every framework it stops.  The driver's own libraries
(``libcuda.so.1``, ``libnvidia-ml.so.1``) missing without a driver are this cause, not another.
"""
from __future__ import annotations

from .base import Action, Finding, RuleContext, RuleResult, SimpleRule
from .hints import DRIVER_STEP

RULE_ID = "driver"
CAUSE = "driver"


def check(ctx: RuleContext) -> RuleResult:
    report = ctx.report
    driver = report.driver
    if driver is None:
        return RuleResult()
    findings = []
    for framework in report.frameworks:
        info = framework.info
        if not info.cuda_build or (driver.present and framework.fit.ok):
            continue
        message = f"no NVIDIA driver: {info.on_failure}" if not driver.present else framework.fit.reason
        findings.append(Finding(RULE_ID, "error", message, kind="driver", cause=CAUSE, target=info.label,
                                group=info.label, soname="libcuda.so.1"))
    actions = (Action(RULE_ID, "install", DRIVER_STEP, soname="libcuda.so.1", command=DRIVER_STEP, causes=(CAUSE,),
                      rank=9),) if findings else ()
    return RuleResult(tuple(findings), actions)


RULE = SimpleRule(RULE_ID, "the NVIDIA driver a CUDA build needs: present, new enough, with its devices", check)
