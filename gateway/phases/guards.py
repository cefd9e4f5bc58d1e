"""The rules for changing phase (migration.md "Rules that make this correct", "Guards").

- Moving back one phase is always possible, except back from `cutover`, which needs Redis
  refilled from the actors first (the export/import tool's reverse direction).
- Moving forward goes one phase at a time.
- `read-switch` needs an empty repair queue and a clean, complete, full consistency report
  (`agent-coord check`, the newest in `<data_dir>/consistency/`) newer than the configured age.
- `cutover` needs an empty repair queue.
- Both need an empty dead-letter list (repairs that failed their last retry): an operator
  retries or drops each entry first.

`--force` overrides every guard; the audit log records that it did.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.domain.phase import PHASES, Phase


class PhaseChangeRefusedError(Exception):
    """A phase change the guards refuse; `reasons` say why and what to do."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True, slots=True)
class ConsistencyReportInfo:
    """What the guards need to know of the newest consistency report."""

    finished_ms: int
    clean: bool
    path: str
    complete: bool = True  # False: the check stopped early (a store became unreachable)
    full: bool = True  # False: sampled, or limited to some domains or agents
    compared: int = 0
    differences: int = 0

    @property
    def summary(self) -> str:
        """One line for `phase show`."""
        from gateway.domain.jscompat import iso_from_ms  # noqa: PLC0415 - keeps this module plain

        state = "clean" if self.clean else "NOT clean"
        if not self.complete:
            state = "INCOMPLETE"
        scope = "" if self.full else ", partial (sampled or filtered)"
        return (
            f"{state}, finished {iso_from_ms(self.finished_ms)}, {self.compared} compared, "
            f"{self.differences} differences{scope} ({self.path})"
        )


@dataclass(frozen=True, slots=True)
class GuardContext:
    """The facts a phase change is checked against."""

    repair_depth: int
    last_report: ConsistencyReportInfo | None
    now_ms: int
    report_max_age_s: float
    reverse_synced: bool = False
    dead_letters: int = 0


def refusals(from_phase: str, to_phase: str, ctx: GuardContext) -> list[str]:
    """Why the change would be refused (empty: allowed). Each reason says what to do about it."""
    if to_phase not in PHASES:
        return [f"unknown phase {to_phase!r}; phases are: {', '.join(PHASES)}"]
    if to_phase == from_phase:
        return [f"the gateway is already in phase {to_phase!r}"]
    out: list[str] = []
    step = Phase(to_phase).order - Phase(from_phase).order
    if step > 1:
        out.append(
            f"phases move forward one at a time: {from_phase} -> {PHASES[Phase(from_phase).order + 1]} first"
        )
    if from_phase == "cutover" and not ctx.reverse_synced:
        out.append(
            "moving back from cutover needs Redis refilled from the actors first "
            "(the export/import tool's reverse direction, actors -> legacy); "
            "Redis was not written during cutover"
        )
    if to_phase in ("read-switch", "cutover") and step > 0 and ctx.repair_depth > 0:
        out.append(
            f"the repair queue holds {ctx.repair_depth} entries; wait until it drains "
            "(`agent-coord phase show` shows its depth)"
        )
    if to_phase in ("read-switch", "cutover") and step > 0 and ctx.dead_letters > 0:
        out.append(
            f"{ctx.dead_letters} repairs failed their last retry (the dead-letter list): inspect them "
            "with `agent-coord phase dead-letters`, fix the values, then `agent-coord phase retry-dead` "
            "or `agent-coord phase drop-dead`"
        )
    if to_phase == "read-switch" and step > 0:
        out.extend(_report_refusals(ctx))
    return out


def _report_refusals(ctx: GuardContext) -> list[str]:
    report = ctx.last_report
    if report is None:
        return ["read-switch needs a clean consistency report: run `agent-coord check` first"]
    if not report.complete:
        return [
            f"the newest consistency report is incomplete ({report.path}): the check did not finish; "
            "run `agent-coord check` again"
        ]
    if not report.clean:
        return [
            f"the newest consistency report is not clean ({report.path}); "
            "repair (`agent-coord check --repair`) and check again"
        ]
    if not report.full:
        return [
            f"the newest consistency report covers only part of the stores ({report.path}: sampled, "
            "or limited by --domain/--agent); run a full `agent-coord check`"
        ]
    age_s = (ctx.now_ms - report.finished_ms) / 1000
    if age_s > ctx.report_max_age_s:
        return [
            f"the newest clean consistency report is {age_s:.0f} s old (limit {ctx.report_max_age_s:.0f} s); "
            "run `agent-coord check` again"
        ]
    return []
