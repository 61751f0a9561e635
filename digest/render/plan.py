"""The size plan: which articles go where for one variant, edited by the size gate."""

from __future__ import annotations

from dataclasses import dataclass, field

from digest.issues import ArticleView
from digest.render.values import SHORT_BLURB_CHARS, blurb

#: How many times the size gate may recompile one variant before it gives up.
MAX_GATE_COMPILES = 12


@dataclass(slots=True)
class Plan:
    """Which articles go where for one variant; the size gate edits it between compiles."""

    sections: list[tuple[str, list[ArticleView]]]
    more: list[ArticleView]
    rank: dict[int, tuple[int, int]] = field(default_factory=dict)  # id: (section, place)
    shorten: bool = False
    moved: list[int] = field(default_factory=list)
    dropped: list[ArticleView] = field(default_factory=list)
    pinned: frozenset[int] = frozenset()  # an editor's additions: never dropped

    def shown(self) -> list[ArticleView]:
        return [a for _, arts in self.sections for a in arts] + self.more

    def blurb_ids(self) -> list[int]:
        return [
            a.id for _, arts in self.sections for a in arts if len(blurb(a)) > SHORT_BLURB_CHARS
        ]

    def section_count(self) -> int:
        return sum(len(arts) for _, arts in self.sections)

    def can_move(self) -> bool:
        return any(len(arts) > 1 for _, arts in self.sections)

    def move_one(self) -> bool:
        """Move the lowest-ranked article of the fullest section to the front of "more"."""
        candidates = [arts for _, arts in self.sections if len(arts) > 1]
        if not candidates:
            return False
        arts = max(candidates, key=len)
        article = arts.pop()
        self.moved.append(article.id)
        # Moved articles rank above the ones that were already past the section caps,
        # and read in section order, as they would have in the sections.
        count = len(self.moved)
        block = sorted([article, *self.more[: count - 1]], key=lambda a: self.rank[a.id])
        self.more[: count - 1] = block
        return True

    def can_drop(self) -> bool:
        return any(a.id not in self.pinned for a in self.more)

    def drop_one(self) -> bool:
        """Leave out the last of "more stories" that an editor did not pin."""
        for i in range(len(self.more) - 1, -1, -1):
            if self.more[i].id not in self.pinned:
                self.dropped.insert(0, self.more.pop(i))
                return True
        return False



def saving_per_step(history: list[tuple[int, int]], plan: Plan, phase: str) -> float:
    """Bytes one more move (or drop) saves: measured over the last round, else an
    overestimate, so the gate errs towards too few changes and compiles once more."""
    if len(history) >= 2:
        (size0, steps0), (size1, steps1) = history[-2], history[-1]
        if steps1 > steps0 and size0 > size1:
            return (size0 - size1) / (steps1 - steps0) * 0.95
    size = history[-1][0]
    if phase == "move":
        # The whole body divided among the section articles: more than any one saves.
        return size / max(plan.section_count(), 1)
    return size / max(len(plan.shown()), 1)
