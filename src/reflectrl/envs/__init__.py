"""Text environments and the protocol they share."""

from reflectrl.envs.action_parser import ACTION_IDS, ParsedAction, action_ids, parse_action
from reflectrl.envs.base import InvalidActionError, Observation, StepResult, TextEnv
from reflectrl.envs.registry import list_envs, make_env, register_env

__all__ = [
    "ACTION_IDS",
    "InvalidActionError",
    "Observation",
    "ParsedAction",
    "StepResult",
    "TextEnv",
    "action_ids",
    "list_envs",
    "make_env",
    "parse_action",
    "register_env",
]
