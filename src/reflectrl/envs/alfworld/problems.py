"""A generator of household problems in the ALFRED PDDL domain (written for reflectrl).

The official ALFWorld games come from ALFRED scenes and need a download. This
module writes new ones offline: a room (kitchen, living room, bedroom or
bathroom) with receptacles, closed openable ones, objects placed where ALFRED
allows them, and a goal from alfworld's own goal library (e.g. the paper's
``pick_and_place_simple`` "put a tomato in microwave"). Which receptacle may
hold which object, and which objects can be heated, cooled or cleaned, come
from ``alfworld.gen.constants`` (the knowledge base ALFRED's planner used).

Each problem is written as the files the engine loads, in the official layout
(``json_2.1.1/<split>/<task>-<Obj>-None-<Recep>-<seed>/trial_<id>/`` holding
``initial_state.pddl``, ``traj_data.json`` and ``game.tw-pddl``), so the loader
of the official data reads generated problems too. Everything is a pure
function of the settings and the seed.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alfworld.gen import constants, goal_library

from reflectrl.envs.alfworld.engine import (
    GAME_FILE,
    PROBLEM_FILE,
    TRAJ_DATA_FILE,
    build_game_data,
    templated_task_description,
)
from reflectrl.run_files import write_json_atomic

#: bump when the generator's output changes, so cached problems are regenerated
GENERATOR_VERSION = 1

#: task type -> (object property it needs, receptacle type that applies it)
TASK_TREATMENTS: dict[str, tuple[str, str] | None] = {
    "pick_and_place_simple": None,
    "pick_heat_then_place_in_recep": ("Heatable", "Microwave"),
    "pick_cool_then_place_in_recep": ("Coolable", "Fridge"),
    "pick_clean_then_place_in_recep": ("Cleanable", "SinkBasin"),
}
GENERATED_TASK_TYPES = tuple(TASK_TREATMENTS)

#: seeds of each split: disjoint ranges, so a test problem is never a train problem
SPLIT_SEED_OFFSETS = {"train": 0, "val": 1_000_000, "test": 2_000_000}
SPLIT_SEED_RANGE = 1_000_000
#: the official data's split folders, in the same order
SPLIT_DIRS = {"train": "train", "val": "valid_seen", "test": "valid_unseen"}


@dataclass(frozen=True)
class RoomLayout:
    """What a kind of room holds: receptacle counts ``(min, max)`` and object types."""

    receptacles: dict[str, tuple[int, int]]
    objects: tuple[str, ...]


ROOMS: dict[str, RoomLayout] = {
    "kitchen": RoomLayout(
        receptacles={
            "Cabinet": (2, 6), "CounterTop": (1, 3), "Drawer": (1, 3), "Fridge": (1, 1), "Microwave": (1, 1),
            "SinkBasin": (1, 1), "StoveBurner": (2, 4), "GarbageCan": (1, 1), "DiningTable": (0, 1),
            "Shelf": (0, 2), "CoffeeMachine": (0, 1), "Toaster": (0, 1),
        },
        objects=(
            "Apple", "Bowl", "Bread", "ButterKnife", "Cup", "DishSponge", "Egg", "Fork", "Kettle", "Knife",
            "Ladle", "Lettuce", "Mug", "Pan", "PepperShaker", "Plate", "Pot", "Potato", "SaltShaker",
            "SoapBottle", "Spatula", "Spoon", "Tomato", "WineBottle",
        ),
    ),
    "livingroom": RoomLayout(
        receptacles={
            "Sofa": (1, 1), "ArmChair": (0, 2), "CoffeeTable": (1, 1), "SideTable": (0, 2), "TVStand": (0, 1),
            "Shelf": (1, 3), "Drawer": (0, 3), "Cabinet": (0, 3), "Dresser": (0, 1), "GarbageCan": (1, 1),
            "Ottoman": (0, 1), "Safe": (0, 1),
        },
        objects=(
            "Book", "Box", "Candle", "CellPhone", "CreditCard", "KeyChain", "Laptop", "Newspaper", "Pillow",
            "RemoteControl", "Statue", "TissueBox", "Vase", "Watch", "WateringCan",
        ),
    ),
    "bedroom": RoomLayout(
        receptacles={
            "Bed": (1, 1), "Desk": (0, 1), "Drawer": (2, 5), "Shelf": (0, 3), "SideTable": (0, 2),
            "Dresser": (0, 1), "GarbageCan": (1, 1), "LaundryHamper": (0, 1), "Safe": (0, 1), "ArmChair": (0, 1),
        },
        objects=(
            "AlarmClock", "BaseballBat", "BasketBall", "Book", "Bowl", "CD", "CellPhone", "Cloth", "CreditCard",
            "KeyChain", "Laptop", "Mug", "Pen", "Pencil", "Pillow", "TennisRacket", "Watch",
        ),
    ),
    "bathroom": RoomLayout(
        receptacles={
            "Toilet": (1, 1), "SinkBasin": (1, 2), "BathtubBasin": (0, 1), "CounterTop": (1, 1),
            "Cabinet": (1, 4), "Drawer": (0, 3), "TowelHolder": (0, 1), "HandTowelHolder": (0, 1),
            "ToiletPaperHanger": (1, 1), "GarbageCan": (1, 1), "Shelf": (0, 2), "Cart": (0, 1),
        },
        objects=(
            "Candle", "Cloth", "DishSponge", "HandTowel", "Plunger", "SoapBar", "SoapBottle", "SprayBottle",
            "TissueBox", "ToiletPaper", "ToiletPaperRoll", "Towel",
        ),
    ),
}

#: where people usually keep a thing: the generator puts the target there most of
#: the time (as ALFRED scenes do), and the oracle teacher names these places as
#: the likely ones before the target has been seen
TYPICAL_PLACES: dict[str, tuple[str, ...]] = {
    "Apple": ("Fridge", "CounterTop", "DiningTable", "SinkBasin"),
    "Tomato": ("Fridge", "CounterTop", "DiningTable", "SinkBasin"),
    "Potato": ("Fridge", "CounterTop", "DiningTable", "SinkBasin"),
    "Lettuce": ("Fridge", "CounterTop", "DiningTable"),
    "Egg": ("Fridge", "CounterTop", "DiningTable"),
    "Bread": ("CounterTop", "DiningTable", "Fridge"),
    "Mug": ("Cabinet", "CoffeeMachine", "CounterTop", "Shelf"),
    "Cup": ("Cabinet", "CounterTop", "Shelf"),
    "Bowl": ("Cabinet", "CounterTop", "Shelf", "Desk"),
    "Plate": ("Cabinet", "CounterTop", "DiningTable"),
    "Pan": ("StoveBurner", "Cabinet"),
    "Pot": ("StoveBurner", "Cabinet"),
    "Kettle": ("StoveBurner", "CounterTop"),
    "Knife": ("Drawer", "CounterTop"),
    "ButterKnife": ("Drawer", "CounterTop"),
    "Fork": ("Drawer", "CounterTop"),
    "Spoon": ("Drawer", "CounterTop"),
    "Spatula": ("Drawer", "CounterTop"),
    "Ladle": ("Drawer", "CounterTop"),
    "WineBottle": ("Fridge", "Cabinet", "CounterTop"),
    "SoapBar": ("SinkBasin", "CounterTop", "BathtubBasin"),
    "SoapBottle": ("CounterTop", "Cabinet", "Shelf"),
    "ToiletPaper": ("ToiletPaperHanger", "Cabinet", "Toilet"),
    "ToiletPaperRoll": ("ToiletPaperHanger", "Cabinet", "Toilet"),
    "CellPhone": ("Bed", "Desk", "SideTable", "Sofa"),
    "RemoteControl": ("Sofa", "CoffeeTable", "ArmChair"),
    "Laptop": ("Desk", "Bed", "Sofa", "CoffeeTable"),
    "Book": ("Shelf", "Desk", "Bed", "SideTable"),
    "Pillow": ("Bed", "Sofa", "ArmChair"),
    "AlarmClock": ("Desk", "SideTable", "Shelf", "Dresser"),
    "KeyChain": ("Drawer", "Shelf", "SideTable", "Dresser"),
    "CreditCard": ("Drawer", "Desk", "SideTable"),
}
#: share of target instances put in a typical place (when one is present)
TYPICAL_PLACE_PROB = 0.8


@dataclass(frozen=True)
class GeneratorSettings:
    """What the generated problems look like; part of the cache key.

    ``object_type``/``receptacle_type`` use ALFRED's class names (``Tomato``,
    ``Microwave``, ``CounterTop``...); None lets each seed pick one.
    ``room`` is one of ``ROOMS`` or None (any room that fits the goal).
    ``max_per_receptacle_type`` caps how many of each receptacle a room gets
    (small rooms play faster: the engine's cost grows with the receptacles).
    """

    task_type: str = "pick_and_place_simple"
    object_type: str | None = "Tomato"
    receptacle_type: str | None = "Microwave"
    room: str | None = None
    min_distractors: int = 6
    max_distractors: int = 12
    max_target_instances: int = 2
    max_per_receptacle_type: int | None = None

    def __post_init__(self) -> None:
        if self.task_type not in TASK_TREATMENTS:
            raise ValueError(
                f"the generator writes task types {', '.join(GENERATED_TASK_TYPES)}; got {self.task_type!r} "
                "(other types need the official ALFWorld data)"
            )
        if self.room is not None and self.room not in ROOMS:
            raise ValueError(f"unknown room {self.room!r}; known: {', '.join(ROOMS)}")
        if self.object_type is not None and self.object_type not in constants.OBJECTS_SET:
            raise ValueError(f"unknown ALFRED object type {self.object_type!r} (use class names such as 'Tomato')")
        if self.receptacle_type is not None and self.receptacle_type not in constants.VAL_RECEPTACLE_OBJECTS:
            known = ", ".join(sorted(constants.VAL_RECEPTACLE_OBJECTS))
            raise ValueError(f"unknown ALFRED receptacle type {self.receptacle_type!r}; known: {known}")
        if not 0 <= self.min_distractors <= self.max_distractors:
            raise ValueError(f"need 0 <= min_distractors <= max_distractors, got {self.min_distractors}, {self.max_distractors}")
        if self.max_target_instances < 1:
            raise ValueError(f"max_target_instances must be >= 1, got {self.max_target_instances}")
        if self.max_per_receptacle_type is not None and self.max_per_receptacle_type < 1:
            raise ValueError(f"max_per_receptacle_type must be >= 1 or None, got {self.max_per_receptacle_type}")
        if not self._candidate_rooms():
            raise ValueError(
                f"no room can host {self.task_type} with object {self.object_type} and receptacle "
                f"{self.receptacle_type}: check that ALFRED lets a {self.receptacle_type} hold a {self.object_type}"
            )

    def key(self) -> str:
        """A short hash naming these settings (and the generator version) in the cache."""
        payload = json.dumps({"version": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]

    def _goal_pairs(self, room: RoomLayout) -> list[tuple[str, str]]:
        """(object type, receptacle type) goals this room can host under these settings."""
        treatment = TASK_TREATMENTS[self.task_type]
        if treatment is not None and treatment[1] not in room.receptacles:
            return []
        pairs = []
        for recep in room.receptacles:
            if self.receptacle_type not in (None, recep):
                continue
            for obj in room.objects:
                if self.object_type not in (None, obj) or obj not in constants.VAL_RECEPTACLE_OBJECTS[recep]:
                    continue
                if treatment is not None and obj not in constants.VAL_ACTION_OBJECTS[treatment[0]]:
                    continue
                elsewhere = [r for r in room.receptacles if r != recep and obj in constants.VAL_RECEPTACLE_OBJECTS[r]]
                if elsewhere:
                    pairs.append((obj, recep))
        return pairs

    def _candidate_rooms(self) -> list[str]:
        names = list(ROOMS) if self.room is None else [self.room]
        return [name for name in names if self._goal_pairs(ROOMS[name])]


@dataclass
class GeneratedProblem:
    """One problem: its PDDL text, its ``traj_data.json`` and where it belongs on disk."""

    seed: int
    settings: GeneratorSettings
    room: str
    object_type: str
    receptacle_type: str
    pddl_problem: str
    traj_data: dict[str, Any]
    task_description: str

    @property
    def relative_dir(self) -> Path:
        """``<split dir>/<task>-<Obj>-None-<Recep>-<seed>/trial_<key>_<seed>``, as in json_2.1.1."""
        split = split_of_seed(self.seed)
        task_dir = f"{self.settings.task_type}-{self.object_type}-None-{self.receptacle_type}-{self.seed}"
        return Path(SPLIT_DIRS[split]) / task_dir / f"trial_{self.settings.key()}_{self.seed}"


def split_seeds(split: str, count: int) -> list[int]:
    """The first ``count`` seeds of a split (``train``, ``val`` or ``test``)."""
    if split not in SPLIT_SEED_OFFSETS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLIT_SEED_OFFSETS)}")
    if not 0 <= count <= SPLIT_SEED_RANGE:
        raise ValueError(f"a split holds 0..{SPLIT_SEED_RANGE} generated tasks, got {count}")
    start = SPLIT_SEED_OFFSETS[split]
    return list(range(start, start + count))


def split_of_seed(seed: int) -> str:
    """Which split a generated seed belongs to."""
    for split, start in SPLIT_SEED_OFFSETS.items():
        if start <= seed < start + SPLIT_SEED_RANGE:
            return split
    raise ValueError(f"generated task seeds lie in [0, {len(SPLIT_SEED_OFFSETS) * SPLIT_SEED_RANGE}); got {seed}")


def _sample_receptacles(rng: random.Random, layout: RoomLayout, required: set[str], cap: int | None) -> dict[str, int]:
    counts = {}
    for recep, (low, high) in layout.receptacles.items():
        count = rng.randint(low, high)
        if cap is not None:
            count = min(count, cap)
        if recep in required:
            count = max(count, 1)
        if count:
            counts[recep] = count
    return counts


def _pick_place(rng: random.Random, obj: str, receptacles: list[tuple[str, str]], typical: bool) -> str:
    """A receptacle id for an object: a typical place with TYPICAL_PLACE_PROB when asked."""
    legal = [rid for rid, rtype in receptacles if obj in constants.VAL_RECEPTACLE_OBJECTS[rtype]]
    usual = [rid for rid, rtype in receptacles if rtype in TYPICAL_PLACES.get(obj, ()) and rid in legal]
    if typical and usual and rng.random() < TYPICAL_PLACE_PROB:
        return rng.choice(usual)
    return rng.choice(legal)


def _receptacle_id(rtype: str, index: int) -> str:
    """ALFRED-style ids; sink and bathtub basins carry their basin suffix, which the demangler keys on."""
    if rtype in ("SinkBasin", "BathtubBasin"):
        base = rtype[: -len("Basin")]
        return f"{base}_bar_{index}_bar_{rtype}"
    return f"{rtype}_bar_{index}"


def generate_problem(settings: GeneratorSettings, seed: int) -> GeneratedProblem:
    """Build one problem from ``settings`` and ``seed`` (pure: no files, no engine)."""
    split_of_seed(seed)
    rng = random.Random(f"{settings.key()}:{seed}")
    room_name = rng.choice(settings._candidate_rooms())
    layout = ROOMS[room_name]
    object_type, receptacle_type = rng.choice(settings._goal_pairs(layout))
    treatment = TASK_TREATMENTS[settings.task_type]
    required = {receptacle_type} | ({treatment[1]} if treatment else set())
    # The target needs somewhere to start other than the goal receptacle.
    starts = [r for r in layout.receptacles if r != receptacle_type and object_type in constants.VAL_RECEPTACLE_OBJECTS[r]]
    typical_starts = [r for r in starts if r in TYPICAL_PLACES.get(object_type, ())]
    required.add(rng.choice(typical_starts or starts))
    counts = _sample_receptacles(rng, layout, required, settings.max_per_receptacle_type)

    receptacles = [(_receptacle_id(rtype, i + 1), rtype) for rtype, n in counts.items() for i in range(n)]
    start_places = [(rid, rtype) for rid, rtype in receptacles if rtype != receptacle_type]

    objects: list[tuple[str, str, str]] = []  # (object id, object type, receptacle id)
    per_type: Counter[str] = Counter()

    def place(obj: str, among: list[tuple[str, str]], typical: bool) -> None:
        per_type[obj] += 1
        objects.append((f"{obj}_bar_{per_type[obj]}", obj, _pick_place(rng, obj, among, typical)))

    for _ in range(rng.randint(1, settings.max_target_instances)):
        place(object_type, start_places, typical=True)
    distractor_types = [
        obj for obj in layout.objects
        if obj != object_type and any(obj in constants.VAL_RECEPTACLE_OBJECTS[rtype] for _, rtype in receptacles)
    ]
    for _ in range(rng.randint(settings.min_distractors, settings.max_distractors)):
        place(rng.choice(distractor_types), receptacles, typical=False)

    pddl = _problem_text(
        name=f"plan_trial_{settings.key()}_{seed}",
        receptacles=receptacles,
        objects=objects,
        goal=goal_library.gdict[settings.task_type]["pddl"].format(
            obj=object_type, recep=receptacle_type, toggle="", mrecep=""
        ).replace("#", "-"),
    )
    traj_data = {
        "task_type": settings.task_type,
        "task_id": f"trial_{settings.key()}_{seed}",
        "pddl_params": {
            "object_target": object_type,
            "parent_target": receptacle_type,
            "toggle_target": "",
            "mrecep_target": "",
            "object_sliced": False,
        },
        "scene": {"generator": "reflectrl", "generator_version": GENERATOR_VERSION, "room": room_name,
                  "seed": seed, "settings": asdict(settings)},
    }
    description = templated_task_description(traj_data, rng)
    traj_data["turk_annotations"] = {"anns": [{"task_desc": description}]}
    return GeneratedProblem(
        seed=seed, settings=settings, room=room_name, object_type=object_type, receptacle_type=receptacle_type,
        pddl_problem=pddl, traj_data=traj_data, task_description=description,
    )


def _problem_text(name: str, receptacles: list[tuple[str, str]], objects: list[tuple[str, str, str]], goal: str) -> str:
    """The PDDL problem, in the sections and predicates of ALFWorld's ``initial_state.pddl``."""
    location = {rid: f"loc_bar_{i + 1}" for i, (rid, _) in enumerate(receptacles)}
    rtypes = sorted({rtype for _, rtype in receptacles})
    otypes = sorted({otype for _, otype, _ in objects})
    declarations = (
        ["agent1 - agent"]
        + [f"{otype}Type - otype" for otype in otypes]
        + [f"{rtype}Type - rtype" for rtype in rtypes]
        + [f"{oid} - object" for oid, _, _ in objects]
        + [f"{rid} - receptacle" for rid, _ in receptacles]
        + ["loc_bar_0 - location"]
        + [f"{loc} - location" for loc in location.values()]
    )
    init = [f"(receptacleType {rid} {rtype}Type)" for rid, rtype in receptacles]
    init += [f"(objectType {oid} {otype}Type)" for oid, otype, _ in objects]
    init += [
        f"(canContain {rtype}Type {otype}Type)"
        for rtype in rtypes for otype in otypes if otype in constants.VAL_RECEPTACLE_OBJECTS[rtype]
    ]
    init += [f"(pickupable {oid})" for oid, _, _ in objects]
    init += [f"(isReceptacleObject {oid})" for oid, otype, _ in objects if otype in constants.MOVABLE_RECEPTACLES_SET]
    init += [f"(openable {rid})" for rid, rtype in receptacles if rtype in constants.OPENABLE_CLASS_SET]
    init += ["(atLocation agent1 loc_bar_0)"]
    for predicate, prop in (("cleanable", "Cleanable"), ("heatable", "Heatable"), ("coolable", "Coolable"),
                            ("sliceable", "Sliceable")):
        init += [f"({predicate} {oid})" for oid, otype, _ in objects if otype in constants.VAL_ACTION_OBJECTS[prop]]
    init += [f"(inReceptacle {oid} {rid})" for oid, _, rid in objects]
    init += [f"(receptacleAtLocation {rid} {loc})" for rid, loc in location.items()]
    init += [f"(objectAtLocation {oid} {location[rid]})" for oid, _, rid in objects]
    lines = [f"(define (problem {name})", "(:domain alfred)", "(:objects"]
    lines += [f"        {d}" for d in declarations]
    lines += ["        )", "(:init"]
    lines += [f"        {fact}" for fact in init]
    lines += ["        )"]
    return "\n".join(lines) + "\n" + goal.rstrip() + "\n"


def write_problem(problem: GeneratedProblem, data_root: Path) -> Path:
    """Write a problem's three files under ``data_root`` (a json_2.1.1-like folder).

    Returns the path of its ``game.tw-pddl`` (``solvable`` still unknown: the
    planner fills it in, see ``engine.record_plan``).
    """
    directory = Path(data_root) / problem.relative_dir
    directory.mkdir(parents=True, exist_ok=True)
    (directory / PROBLEM_FILE).write_text(problem.pddl_problem)
    write_json_atomic(directory / TRAJ_DATA_FILE, problem.traj_data)
    game_file = directory / GAME_FILE
    write_json_atomic(game_file, build_game_data(problem.pddl_problem, problem.task_description))
    return game_file
