"""What a recycled lead re-enters when its cool-down ends, checked by ``nurture validate``:
the re-nurture sequences a reject reason names exist and admit recycled leads (errors),
which leads a reason sends nowhere (warnings), and which track each persona gets, its own
or the generic one (notes).

The rule (see docs/funnel.md): a reason's re-nurture sequence for the lead's persona
(``by_persona``), else its generic ``sequence``; a reason with neither sends the lead back
to ``lead`` and the track of its persona and journey stage, which admits it at once (the
cool-down sales gave replaces the track's own), unless that track is ``entry: once``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from nurture.authoring.problems import Problem
from nurture.core.stages import LifecycleStage
from nurture.funnel.spec import RejectReason
from nurture.sequences.spec import SequenceSpec

# Checks one named sequence reference (the lifecycle loader's own check).
RefCheck = Callable[[str, tuple[str, ...]], list[Problem]]
Warn = Callable[[str, tuple[str, ...]], Problem]


def renurture_problems(
    code: str,
    reason: RejectReason,
    specs: Sequence[SequenceSpec],
    check_ref: RefCheck,
    warn: Warn,
) -> list[Problem]:
    """Every problem of one reject reason's re-nurture: its sequences, and its coverage."""
    where = ("sales", "reject_reasons", code)
    problems: list[Problem] = []
    if reason.sequence:
        problems += check_ref(reason.sequence, (*where, "sequence"))
    for persona, key in reason.by_persona.items():
        problems += check_ref(key, (*where, "by_persona", persona))
    if not reason.sequence:
        problems += _dead_ends(code, reason, specs, warn, where)
    return problems


def personas_of(specs: Sequence[SequenceSpec]) -> list[str]:
    """Every persona some sequence is written for, sorted."""
    return sorted({p for spec in specs for p in spec.audience.personas})


def route_note(code: str, reason: RejectReason, specs: Sequence[SequenceSpec]) -> str:
    """Which re-nurture track each persona gets for a reason: ``timing: finance_leader ->
    finance-leader-renurture-later, procurement_manager -> renurture-later (generic)``."""
    routes = []
    for persona in personas_of(specs):
        own = reason.by_persona.get(persona)
        if own:
            routes.append(f"{persona} -> {own}")
        elif reason.sequence:
            routes.append(f"{persona} -> {reason.sequence} (generic)")
        else:
            routes.append(f"{persona} -> its usual track")
    return f"re-nurture for {code}: {', '.join(routes) or 'no personas'}"


def _dead_ends(
    code: str,
    reason: RejectReason,
    specs: Sequence[SequenceSpec],
    warn: Warn,
    where: tuple[str, ...],
) -> list[Problem]:
    """A warning per persona and journey stage whose leads this reason sends nowhere."""
    nowhere: list[str] = []
    for persona in personas_of(specs):
        if persona in reason.by_persona:
            continue
        for stage in ("awareness", "consideration", "decision"):
            why = _no_track(persona, stage, specs)
            if why:
                nowhere.append(f"{persona} at {stage} ({why})")
    if not nowhere:
        return []
    message = (
        f"sales.reject_reasons.{code}: no re-nurture sequence, and a lead recycled for it "
        f"re-enters nothing when it is {'; '.join(nowhere)}: name a sequence for the reason"
    )
    return [warn(message, where)]


def _no_track(persona: str, stage: str, specs: Sequence[SequenceSpec]) -> str:
    """Why a ``lead`` of this persona and journey stage, back from recycling, would enter
    none of its tracks ("" when one admits it, or it has none)."""
    tracks = [
        s
        for s in specs
        if persona in s.audience.personas
        and stage in s.audience.journey_stages
        and LifecycleStage.lead in s.audience.lifecycle_stages
    ]
    # No track at all is a gap in the program whether or not sales recycles (a lead at that
    # stage was never nurtured): only tracks that would refuse a returning lead count here.
    if tracks and all(t.entry.policy == "once" for t in tracks):
        keys = ", ".join(t.key for t in tracks)
        return f"{keys}: entry once"
    return ""
