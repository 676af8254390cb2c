"""driver: a CUDA build on a machine with no NVIDIA GPU, or whose driver is absent, does not fit, or shows no device.

One cause for the machine, naming every framework it stops.  The driver's own libraries
(``libcuda.so.1``, ``libnvidia-ml.so.1``) missing without a driver are this cause, not another.
"""
from __future__ import annotations

from .base import Action, Finding, RuleContext, RuleResult, SimpleRule
from .hints import DRIVER_STEP

RULE_ID = "driver"
CAUSE = "driver"
NO_GPU_STEP = ("this machine has no NVIDIA GPU: run on a GPU host, or judge the libraries alone with "
               "`libdoctor scan --libraries-only`")
NODES_STEP = ("give the process the GPU: start the container with it (`docker run --gpus all`, the NVIDIA "
              "container toolkit), or create the nodes (`nvidia-modprobe`, as root)")


def machine_problem(report, framework) -> tuple[str, str] | None:  # noqa: ANN001 - ScanReport, FrameworkReport
    """(what stops the framework, the step) when the machine itself does: no GPU, no driver, a driver that does
    not fit, no device nodes.  None when the machine can run it (or ``--libraries-only`` leaves it unjudged)."""
    driver, info = report.driver, framework.info
    if driver is None or not info.cuda_build or report.inputs.libraries_only:
        return None
    if not driver.present and driver.no_gpu:
        return f"no NVIDIA GPU in this machine (no PCI device of vendor 10de): {info.on_failure}", NO_GPU_STEP
    if not driver.present:
        return f"no NVIDIA driver: {info.on_failure}", DRIVER_STEP
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
