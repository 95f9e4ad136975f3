"""Curriculum schedules: proportional steps (paper) and promotion by success."""

from reflectrl.config import CurriculumConfig
from reflectrl.train.curriculum import Curriculum


def test_schedule_gives_levels_steps_in_proportion_to_size():
    config = CurriculumConfig(kind="schedule", levels=[{"d": 0}, {"d": 1}, {"d": 2}])
    curriculum = Curriculum.from_config(config, total_iterations=100, sizes=[10, 30, 60])
    levels = []
    for iteration in range(100):
        levels.append(curriculum.level)
        curriculum.update(iteration + 1, [False])
    assert levels.count(0) == 10 and levels.count(1) == 30 and levels.count(2) == 60


def test_success_promotion_and_cap():
    config = CurriculumConfig(kind="success", levels=[{}, {}, {}], threshold=0.75, window=4, max_iterations_per_level=5)
    curriculum = Curriculum.from_config(config, total_iterations=100)
    assert not curriculum.update(1, [True, False])  # 1/2, window not yet full
    assert curriculum.update(2, [True, True])  # 3/4 = threshold over a full window
    assert curriculum.level == 1
    for i in range(4):
        assert not curriculum.update(3 + i, [False])
    assert curriculum.update(7, [False])  # capped at 5 iterations
    assert curriculum.level == 2


def test_state_round_trip():
    config = CurriculumConfig(kind="success", levels=[{}, {}], window=8)
    a = Curriculum.from_config(config, 10)
    a.update(1, [True, False, True])
    b = Curriculum.from_config(config, 10)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict()
