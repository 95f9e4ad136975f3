"""Two arms on the same held-out tasks: a paired comparison.

Every arm of a run plays the same tasks, so two arms' results are pairs, not
two independent samples: comparing their separate Wilson intervals throws the
pairing away and needs a far larger gap to separate them. Here the tasks are
matched (level and task, in order of play where a task repeats) and counted
by who solved them; the difference in success gets Newcombe's interval for
paired proportions (his method 10: Wilson intervals of both arms, corrected
for their correlation), and the exact McNemar test asks whether the tasks
only one arm solved split evenly.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from reflectrl.errors import UserError
from reflectrl.eval.intervals import wilson_interval


@dataclass(frozen=True)
class PairedCounts:
    """Tasks by outcome of arm A and arm B."""

    both: int
    only_a: int
    only_b: int
    neither: int

    @property
    def n(self) -> int:
        return self.both + self.only_a + self.only_b + self.neither

    @property
    def difference(self) -> float:
        """A's success minus B's."""
        return (self.only_a - self.only_b) / self.n if self.n else 0.0


def _task_key(record: dict[str, Any]) -> str:
    return json.dumps([record["level"], record["task"]], sort_keys=True)


def paired_counts(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> PairedCounts:
    """Match two arms' episode records task by task; refused unless both played exactly the same tasks."""
    plays: dict[str, list[list[bool]]] = defaultdict(lambda: [[], []])
    for side, records in enumerate((a, b)):
        for record in records:
            plays[_task_key(record)][side].append(bool(record["success"]))
    unmatched = {key: (len(sa), len(sb)) for key, (sa, sb) in plays.items() if len(sa) != len(sb)}
    if unmatched:
        key, (na, nb) = next(iter(unmatched.items()))
        raise UserError(f"the two arms did not play the same tasks: {len(unmatched)} tasks differ, e.g. {key} "
                        f"played {na} times by one and {nb} by the other")
    counts = {"both": 0, "only_a": 0, "only_b": 0, "neither": 0}
    for sa, sb in plays.values():
        for wa, wb in zip(sa, sb):
            counts["both" if wa and wb else "only_a" if wa else "only_b" if wb else "neither"] += 1
    return PairedCounts(**counts)


def paired_difference_interval(counts: PairedCounts, z: float = 1.96) -> tuple[float, float]:
    """Newcombe's (1998) method-10 interval for A's success minus B's on paired tasks."""
    n = counts.n
    if n == 0:
        return (-1.0, 1.0)
    p1, p2 = (counts.both + counts.only_a) / n, (counts.both + counts.only_b) / n
    l1, u1 = wilson_interval(counts.both + counts.only_a, n, z)
    l2, u2 = wilson_interval(counts.both + counts.only_b, n, z)
    margins = ((counts.both + counts.only_a) * (counts.only_b + counts.neither)
               * (counts.both + counts.only_b) * (counts.only_a + counts.neither))
    phi = (counts.both * counts.neither - counts.only_a * counts.only_b) / math.sqrt(margins) if margins else 0.0
    d = p1 - p2
    low = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return (max(-1.0, low), min(1.0, high))


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: how likely a split of the discordant tasks at least this uneven is
    when either arm is as likely to be the one that solved each."""
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1)) / 2 ** discordant
    return min(1.0, 2 * tail)


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """A against B as JSON: the counts, A's success minus B's with its 95% interval, and the McNemar p."""
    return compare_counts(paired_counts(a, b))


def compare_counts(counts: PairedCounts) -> dict[str, Any]:
    """``compare``'s JSON from counts already matched (e.g. summed over seeds, each seed's tasks paired)."""
    low, high = paired_difference_interval(counts)
    return {"tasks": counts.n, "both": counts.both, "only_a": counts.only_a, "only_b": counts.only_b,
            "neither": counts.neither, "difference": round(counts.difference, 4),
            "difference_ci": [round(low, 4), round(high, 4)], "p": mcnemar_exact_p(counts.only_a, counts.only_b)}


def format_difference(comparison: dict[str, Any]) -> str:
    """'+12 [+3.7, +21.7]': A minus B in points, with its interval."""
    low, high = comparison["difference_ci"]
    return f"{100 * comparison['difference']:+.0f} [{100 * low:+.1f}, {100 * high:+.1f}]"
