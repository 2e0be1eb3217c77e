"""Which stems a run gives, and which model gives each: the stem plan.

Every run is planned here, the same way: one model (a plan with one member), an ensemble,
and the torch-free planner that decides whether a rerun has anything left to do.

A run's output stems are, without ``--two-stems``, every stem any of its models gives (the
first model's order, then the new stems of the next); with ``--two-stems X``, X and its
complement (``accompaniment`` for vocals, ``no_X`` else; not with ``--other-method none``);
``--stem`` then keeps some of them. Each model contributes what it can:

* a stem of its own, as it is (``direct``);
* the complement of one of its stems (``derived``): with ``--other-method minus`` the
  mixture minus that stem, otherwise the sum of its other stems (in the model's order).

``needed`` is what a model must compute for that: its direct stems and what its derived
ones are made of, so a model's other networks need not run. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .errors import UsageError
from .stems import complement_name

OTHER_METHODS = ("add", "minus", "none")
"""``--other-method``: how the complement of ``--two-stems`` is made (``none``: not at all)."""


@dataclass(frozen=True)
class MemberStems:
    """What one model of a run contributes."""

    direct: tuple[str, ...]
    """Output stems that are the model's own stems."""
    derived: tuple[tuple[str, str, str], ...]
    """(output stem, the model's stem it complements, "add" or "minus")."""
    needed: tuple[str, ...]
    """The model's own stems to compute (in its order): the direct ones, and what the
    derived ones are made of."""

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.direct + tuple(name for name, _, _ in self.derived)

    @property
    def needs_mixture(self) -> bool:
        return any(method == "minus" for _, _, method in self.derived)


@dataclass(frozen=True)
class StemPlan:
    names: tuple[str, ...]
    """The run's output stems, in order."""
    members: tuple[MemberStems, ...]

    def contributors(self, name: str) -> list[int]:
        """The members that give ``name``, in model order."""
        return [index for index, member in enumerate(self.members) if name in member.outputs]

    @property
    def combines(self) -> bool:
        """Whether some stem is given by several models (and must be combined)."""
        return any(len(self.contributors(name)) > 1 for name in self.names)


def _member_stems(sources: Sequence[str], names: Sequence[str], method: str) -> MemberStems:
    direct, derived = [], []
    for name in names:
        if name in sources:
            direct.append(name)
            continue
        # complement_name is one-to-one: at most one of the model's stems has this complement
        complemented = [source for source in sources if complement_name(source) == name]
        if complemented:
            derived.append((name, complemented[0], method))
    used = set(direct)
    for _, source, how in derived:
        used.update([source] if how == "minus" else [s for s in sources if s != source])
    needed = tuple(source for source in sources if source in used)
    return MemberStems(tuple(direct), tuple(derived), needed)


def plan_stems(member_sources: Sequence[Sequence[str]], member_names: Sequence[str], *,
               two_stems: str | None = None, other_method: str = "add",
               only: Sequence[str] | None = None) -> StemPlan:
    """The output stems of a run of models giving ``member_sources`` (one per model), and who
    gives which. UsageError, before any work, for an unknown ``other_method``, a stem no
    model gives, and a model that gives none of the outputs."""
    if other_method not in OTHER_METHODS:
        raise UsageError(f"unknown --other-method '{other_method}'",
                         hint="choose add, minus or none")
    method = "minus" if other_method == "minus" else "add"
    givable: list[str] = []
    for sources in member_sources:
        givable += [s for s in sources if s not in givable]
    if two_stems is not None:
        names = [two_stems] + ([complement_name(two_stems)] if other_method != "none" else [])
    else:
        names = list(givable)
    if only:
        unknown = [stem for stem in only if stem not in names]
        if unknown:
            raise UsageError(f"--stem {', '.join(unknown)}: not among this run's stems",
                             hint=f"available: {', '.join(names)}")
        names = [stem for stem in names if stem in only]
    members = tuple(_member_stems(sources, names, method) for sources in member_sources)
    for name in names:
        if not any(name in member.outputs for member in members):
            if len(members) == 1:
                raise UsageError(f"stem '{name}' is not produced by this model",
                                 hint=f"it produces {', '.join(givable)}")
            raise UsageError(f"stem '{name}' is not produced by any model of the ensemble",
                             hint=f"they produce {', '.join(givable)}")
    for model, member in zip(member_names, members):
        if not member.outputs:
            raise UsageError(f"model {model} gives none of this run's stems "
                             f"({', '.join(names)})", hint="leave it out of the ensemble")
    return StemPlan(tuple(names), members)


@dataclass(frozen=True)
class StemSelection:
    """Which stems to produce: the models', or one stem and its complement."""

    two_stems: str | None = None
    other_method: str = "add"
    only: tuple[str, ...] | None = None
    """Write only these of the produced stems (``--stem``)."""

    def plan(self, member_sources: Sequence[Sequence[str]],
             member_names: Sequence[str] | None = None) -> StemPlan:
        """The plan of a run of models giving ``member_sources``."""
        names = member_names if member_names is not None else [
            f"#{index + 1}" for index in range(len(member_sources))]
        return plan_stems(member_sources, names, two_stems=self.two_stems,
                          other_method=self.other_method, only=self.only)
