"""ALFWorld through the real alfworld/TextWorld engine, with an offline problem generator."""

from reflectrl.envs.alfworld.env import ALFWorld
from reflectrl.envs.alfworld.problems import GeneratorSettings, generate_problem, write_problem

__all__ = ["ALFWorld", "GeneratorSettings", "generate_problem", "write_problem"]
