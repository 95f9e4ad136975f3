"""Recipes: YAML files mapped onto dataclasses and validated.

Every key of a recipe maps to a dataclass field; an unknown key or a value of
the wrong type is an error that names the key (``rl.lr: expected float, got
'fast'``), so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reflectrl.agent.models import LoraSettings, ModelSpec


class ConfigError(ValueError):
    """A recipe key or value that is not accepted."""


@dataclass
class EnvConfig:
    name: str = "taxi"
    #: constructor arguments of the env (``make_env(name, **kwargs)``)
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: extra constructor arguments used during RL only (e.g. AutoExplore's hide_unrelated_prob)
    train_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TeacherConfig:
    kind: str = "oracle"  # oracle | openai
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"
    cache_dir: str | None = None


@dataclass
class DataConfig:
    #: teacher trajectories on training tasks
    episodes: int = 200
    #: probability that a step of a positive trajectory takes a random action
    random_action_prob: float = 0.3
    #: negative examples per trajectory (replay to step h, wrong action, correction)
    negatives_per_episode: int = 1
    #: fraction of examples kept aside for validation
    val_fraction: float = 0.1
    #: curriculum stage/level kwargs to generate data on (env kwargs overrides); empty = env.kwargs only
    stages: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SFTConfig:
    epochs: float = 3.0
    lr: float = 1e-3
    batch_size: int = 16
    grad_accum: int = 1
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_length: int = 1024
    #: shuffle which id names which action in policy examples
    shuffle_ids: bool = True
    eval_every: int = 100
    save_every: int = 0
    max_steps: int = 0


@dataclass
class CurriculumConfig:
    #: "schedule": levels get steps in proportion to their size (paper); "success": promote on moving success
    kind: str = "schedule"
    #: list of env kwargs, one per level (e.g. [{stage: pickup}, {stage: dropoff}, {stage: full}])
    levels: list[dict[str, Any]] = field(default_factory=list)
    #: relative sizes for the schedule kind (default: number of train tasks of each level)
    weights: list[float] = field(default_factory=list)
    threshold: float = 0.8
    window: int = 64
    #: for the success kind: most iterations on one level before promotion anyway
    max_iterations_per_level: int = 0

    def __post_init__(self) -> None:
        n_levels = len(self.levels) or 1
        if self.weights and len(self.weights) != n_levels:
            raise ValueError(f"weights has {len(self.weights)} entries for {n_levels} levels")
        if any(weight <= 0 for weight in self.weights):
            raise ValueError(f"weights must be positive, got {self.weights}")


@dataclass
class RLConfig:
    algorithm: str = "reinforce"  # reinforce | ppo | group
    iterations: int = 100
    #: episodes rolled out in lock-step per iteration
    batch_episodes: int = 16
    lr: float = 2e-4
    weight_decay: float = 0.001
    grad_clip: float = 0.3
    gamma: float = 1.0
    #: REINFORCE baseline: "none" (the paper) or "mean" (subtract the batch's mean return-to-go)
    baseline: str = "none"
    #: steps per forward/backward chunk (gradients accumulate over the whole batch)
    minibatch_size: int = 32
    temperature: float = 1.0
    entropy_coef: float = 0.0
    kl_coef: float = 0.0
    replay_size: int = 50
    replay_batch: int = 16
    #: PPO
    ppo_epochs: int = 3
    clip: float = 0.1
    value_coef: float = 0.5
    gae_lambda: float = 0.95
    #: group baseline: rollouts per task
    group_size: int = 4
    shuffle_ids: bool = False
    checkpoint_every: int = 20
    eval_every: int = 0
    eval_episodes: int = 32


@dataclass
class EvalConfig:
    episodes: int = 100
    split: str = "test"
    greedy: bool = True
    #: play held-out tasks again (with new seeds) until ``episodes`` is reached; set false where a
    #: task fixes the whole episode (a taxi start state) and play is greedy: repeats would only
    #: copy results and make the interval look narrower than the evidence
    repeat_tasks: bool = True
    #: per-level eval kwargs (e.g. taxi stages); empty = env.kwargs
    levels: list[dict[str, Any]] = field(default_factory=list)
    endpoint: TeacherConfig | None = None


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    threads: int = 0
    out_dir: str = "runs"
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    #: the reflector's model; None = same spec as the policy
    reflector_model: ModelSpec | None = None
    #: where the policies' SFT starts: "base" (the model itself, the paper's way) or "reflector"
    #: (the SFT'd reflector: for a tiny model trained from scratch it is the only model that
    #: has already learned to read the env's text; both policy arms start from it)
    policy_init: str = "base"
    reflection_tokens: int = 64
    reflection_probability: float = 1.0
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    reflector_sft: SFTConfig | None = None
    rl: RLConfig = field(default_factory=RLConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    #: "basic": the paper's main arms; "full": also without negatives and RL without SFT
    ablations: str = "basic"

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


_CHOICES = {
    "teacher.kind": ("oracle", "openai"),
    "rl.algorithm": ("reinforce", "ppo", "group"),
    "rl.baseline": ("none", "mean"),
    "curriculum.kind": ("schedule", "success"),
    "ablations": ("basic", "full"),
    "policy_init": ("base", "reflector"),
    "eval.split": ("train", "val", "test"),
}


def _convert(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{key}: unexpected value {value!r}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(hint, value, prefix=key + ".")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_convert(v, args[0] if args else Any, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and bad types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)}; allowed under "
            f"{prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(names))}"
        )
    kwargs = {name: _convert(value, hints[name], prefix + name) for name, value in values.items()}
    for key, choices in _CHOICES.items():
        head, _, rest = key.partition(".")
        if rest and prefix == head + "." and rest in kwargs and kwargs[rest] not in choices:
            raise ConfigError(f"{key}: {kwargs[rest]!r} is not one of {', '.join(choices)}")
        if not rest and prefix == "" and head in kwargs and kwargs[head] not in choices:
            raise ConfigError(f"{key}: {kwargs[head]!r} is not one of {', '.join(choices)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {error}") from error


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a recipe; ``overrides`` are dotted keys (``{"rl.iterations": 5}``) applied on top."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(values).__name__}")
    for dotted, value in (overrides or {}).items():
        node = values
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted}: {part} is not a mapping")
        node[leaf] = value
    return from_dict(RunConfig, values)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


__all__ = [
    "ConfigError",
    "CurriculumConfig",
    "DataConfig",
    "EnvConfig",
    "EvalConfig",
    "LoraSettings",
    "ModelSpec",
    "RLConfig",
    "RunConfig",
    "SFTConfig",
    "TeacherConfig",
    "from_dict",
    "load_config",
    "save_config",
    "to_dict",
]
