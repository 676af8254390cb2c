"""driver: a CUDA build on a machine with no NVIDIA GPU, or whose driver is absent, does not fit, or shows no device.

One cause for the machine, naming every framework it stops.  The driver's own libraries
(``libcuda.so.1``, ``libnvidia-ml.so.1``) missing without a driver are this cause, not another.
"""
from __future__ import annotations

from .base import Action, Finding, RuleContext, RuleResult, SimpleRule
from .hints import DRIVER_STEP, NODES_STEP, driver_step

RULE_ID = "driver"
CAUSE = "driver"


def machine_problem(report, framework) -> tuple[str, str] | None:  # noqa: ANN001 - ScanReport, FrameworkReport
    """(what stops the framework, the step) when the machine itself does: no GPU, no driver, a driver that does
    not fit, no device nodes.  None when the machine can run it (or ``--libraries-only`` leaves it unjudged)."""
    driver, info = report.driver, framework.info
    if driver is None or not info.cuda_build or report.inputs.libraries_only:
        return None
    if not driver.present:
        what = "no NVIDIA GPU in this machine (no PCI device of vendor 10de)" if driver.no_gpu else "no NVIDIA driver"
        return f"{what}: {info.on_failure}", driver_step(report)
    if not framework.fit.ok:
        return framework.fit.reason, DRIVER_STEP
    if not driver.device_nodes:
        return (f"no /dev/nvidia* device nodes (a container started without the GPU?): {info.title} sees no GPU",
                NODES_STEP)
    return None


def check(ctx: RuleContext) -> RuleResult:
    report = ctx.report
    findings, steps = [], []
    for framework in report.frameworks:
        problem = machine_problem(report, framework)
        if problem is None:
            continue
        info = framework.info
        findings.append(Finding(RULE_ID, "error", problem[0], kind="driver", cause=CAUSE, target=info.label,
                                group=info.label, soname="libcuda.so.1"))
        steps.append(problem[1])
    actions = tuple(Action(RULE_ID, "install", step, soname="libcuda.so.1", command=step, causes=(CAUSE,), rank=9)
                    for step in dict.fromkeys(steps))
    return RuleResult(tuple(findings), actions)


RULE = SimpleRule(RULE_ID, "the NVIDIA driver a CUDA build needs: present, new enough, with its devices", check)
