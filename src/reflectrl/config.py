"""Recipes: YAML files mapped onto dataclasses, validated by pydantic when they load.

Every key of a recipe maps to a dataclass field with its type and range; an
unknown key, a value of the wrong type or out of range is an error that names
the key (``rl.lr: Input should be greater than 0 (got -0.1)``), so a typo
never silently falls back to a default and a bad number never fails later
with a raw traceback.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from reflectrl.agent.models import LoraSettings, ModelSpec


class ConfigError(ValueError):
    """A recipe key or value that is not accepted."""


PositiveInt = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
#: every section rejects keys it does not know
_STRICT_KEYS = ConfigDict(extra="forbid")


@dataclass
class EnvConfig:
    __pydantic_config__ = _STRICT_KEYS

    name: str = "taxi"
    #: constructor arguments of the env (``make_env(name, **kwargs)``)
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: extra constructor arguments used during RL only (e.g. AutoExplore's hide_unrelated_prob)
    train_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TeacherConfig:
    __pydantic_config__ = _STRICT_KEYS

    kind: Literal["oracle", "openai"] = "oracle"
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"
    cache_dir: str | None = None
    #: seconds one attempt may take in all, connecting to the reply's last byte (a server dripping bytes
    #: is cut off there)
    timeout: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 60.0
    #: attempts per request, the first included, before the command gives up
    attempts: PositiveInt = 6


@dataclass
class DataConfig:
    __pydantic_config__ = _STRICT_KEYS

    #: teacher trajectories on training tasks
    episodes: PositiveInt = 200
    #: probability that a step of a positive trajectory takes a random action
    random_action_prob: Probability = 0.3
    #: negative examples per trajectory (replay to step h, wrong action, correction)
    negatives_per_episode: Count = 1
    #: fraction of examples kept aside for validation
    val_fraction: Probability = 0.1
    #: curriculum stage/level kwargs to generate data on (env kwargs overrides); empty = env.kwargs only
    stages: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SFTConfig:
    __pydantic_config__ = _STRICT_KEYS

    epochs: PositiveFloat = 3.0
    lr: PositiveFloat = 1e-3
    batch_size: PositiveInt = 16
    grad_accum: PositiveInt = 1
    weight_decay: NonNegative = 0.0
    warmup_ratio: Probability = 0.05
    max_length: Annotated[int, Field(ge=2)] = 1024
    #: shuffle which id names which action in policy examples
    shuffle_ids: bool = True
    eval_every: Count = 100
    save_every: Count = 0
    max_steps: Count = 0
    #: split each batch into micro-batches of at most this many padded tokens (rows x longest row),
    #: accumulating gradients: the same update in less memory; 0 = the whole batch at once
    max_batch_tokens: Count = 0
    #: recompute activations in the backward pass instead of keeping them (less memory, ~30% more time)
    gradient_checkpointing: bool = False


@dataclass
class CurriculumConfig:
    __pydantic_config__ = _STRICT_KEYS

    #: "schedule": levels get steps in proportion to their size (paper); "success": promote on moving success
    kind: Literal["schedule", "success"] = "schedule"
    #: list of env kwargs, one per level (e.g. [{stage: pickup}, {stage: dropoff}, {stage: full}])
    levels: list[dict[str, Any]] = field(default_factory=list)
    #: relative sizes for the schedule kind (default: number of train tasks of each level)
    weights: list[float] = field(default_factory=list)
    threshold: Probability = 0.8
    window: PositiveInt = 64
    #: for the success kind: most iterations on one level before promotion anyway
    max_iterations_per_level: Count = 0

    def __post_init__(self) -> None:
        n_levels = len(self.levels) or 1
        if self.weights and len(self.weights) != n_levels:
            raise ValueError(f"weights has {len(self.weights)} entries for {n_levels} levels")
        if any(weight <= 0 for weight in self.weights):
            raise ValueError(f"weights must be positive, got {self.weights}")


@dataclass
class RLConfig:
    __pydantic_config__ = _STRICT_KEYS

    algorithm: Literal["reinforce", "ppo", "group"] = "reinforce"
    iterations: PositiveInt = 100
    #: episodes rolled out in lock-step per iteration
    batch_episodes: PositiveInt = 16
    lr: PositiveFloat = 2e-4
    weight_decay: NonNegative = 0.001
    grad_clip: PositiveFloat = 0.3
    gamma: Probability = 1.0
    #: REINFORCE baseline: "none" (the paper) or "mean" (subtract the batch's mean return-to-go)
    baseline: Literal["none", "mean"] = "none"
    #: steps per forward/backward chunk (gradients accumulate over the whole batch)
    minibatch_size: PositiveInt = 32
    temperature: PositiveFloat = 1.0
    entropy_coef: NonNegative = 0.0
    kl_coef: NonNegative = 0.0
    replay_size: Count = 50
    replay_batch: Count = 16
    #: PPO
    ppo_epochs: PositiveInt = 3
    clip: Annotated[float, Field(gt=0, lt=1)] = 0.1
    value_coef: NonNegative = 0.5
    gae_lambda: Probability = 0.95
    #: group baseline: rollouts per task
    group_size: PositiveInt = 4
    shuffle_ids: bool = False
    checkpoint_every: Count = 20


@dataclass
class EvalConfig:
    __pydantic_config__ = _STRICT_KEYS

    episodes: PositiveInt = 100
    #: "heldout" = val + test: tasks never trained on (val only gives SFT its validation loss)
    split: Literal["train", "val", "test", "heldout"] = "test"
    greedy: bool = True
    #: play held-out tasks again (with new seeds) until ``episodes`` is reached; set false where a
    #: task fixes the whole episode (a taxi start state) and play is greedy: repeats would only
    #: copy results and make the interval look narrower than the evidence
    repeat_tasks: bool = True
    #: per-level eval kwargs (e.g. taxi stages); empty = env.kwargs
    levels: list[dict[str, Any]] = field(default_factory=list)
    #: also play every held-out task this many times with actions (and reflections) sampled at
    #: ``sampled_temperature``, the authors' protocol, reported beside greedy; 0 = greedy only
    sampled_repeats: Count = 0
    sampled_temperature: PositiveFloat = 1.0
    #: a zero-shot LLM behind an OpenAI-compatible server, evaluated as the arm ``endpoint``
    #: (and the default of ``reflectrl eval --agent endpoint``)
    endpoint: TeacherConfig | None = None


@dataclass
class RunConfig:
    __pydantic_config__ = _STRICT_KEYS

    name: str = "run"
    seed: Count = 0
    #: torch threads per process (0 = torch's default: every core, or cores / jobs with ``jobs: 2``)
    threads: Count = 0
    #: 2 = ``reflectrl run`` plays the no-reflection arms (their policy SFT, RL and evaluation, and the
    #: random and oracle baselines) in a second process beside the reflection arms: two models in memory
    jobs: Literal[1, 2] = 1
    out_dir: str = "runs"
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    #: the reflector's model; None = same spec as the policy
    reflector_model: ModelSpec | None = None
    #: where the policies' SFT starts: "base" (the model itself, the paper's way) or "reflector"
    #: (the SFT'd reflector: for a tiny model trained from scratch it is the only model that
    #: has already learned to read the env's text; both policy arms start from it)
    policy_init: Literal["base", "reflector"] = "base"
    #: how the policy scores the enumerated actions: "id" (the paper's one-token id answer) or
    #: "text" (each action's own text, mean log-likelihood: a pretrained LM needs no id-reading)
    action_scoring: Literal["id", "text"] = "id"
    #: the reflector's longest analysis, in tokens (the paper: 100)
    reflection_tokens: PositiveInt = 64
    #: 0 = greedy reflections; the paper samples them at 1.0, in RL and in evaluation
    reflection_temperature: NonNegative = 0.0
    reflection_probability: Probability = 1.0
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    reflector_sft: SFTConfig | None = None
    rl: RLConfig = field(default_factory=RLConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    #: "basic": the paper's main arms; "full": also without negatives and RL without SFT
    ablations: Literal["basic", "full"] = "basic"

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


_SECTIONS = (EnvConfig, TeacherConfig, DataConfig, SFTConfig, CurriculumConfig, RLConfig, EvalConfig)


def _key(location: tuple[Any, ...]) -> str:
    """pydantic's error location as a recipe key: ``rl.lr``, ``curriculum.levels[1]``."""
    key = ""
    for part in location:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += f".{part}" if key else str(part)
    return key


def _allowed_keys(cls: Any, location: tuple[Any, ...]) -> list[str]:
    """The field names of the section at ``location`` (for the message on an unknown key)."""
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    for part in location:
        name = str(hints.get(part, ""))
        section = next((c for c in (*_SECTIONS, ModelSpec, LoraSettings) if c.__name__ in name), None)
        if section is None:
            return []
        hints = {f.name: f.type for f in dataclasses.fields(section)}
    return sorted(hints)


def from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Build dataclass ``cls`` from a mapping; every problem is named by its key in one ConfigError."""
    try:
        return TypeAdapter(cls).validate_python(values)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            key = _key(item["loc"]) or "the recipe"
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
                message = f"unknown key; allowed here: {', '.join(_allowed_keys(cls, item['loc'][:-1]))}"
            elif "input" in item and not isinstance(item["input"], dict):
                message += f" (got {item['input']!r})"
            problems.append(f"{key}: {message}")
        raise ConfigError("; ".join(problems)) from None


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


def redacted_dict(config: RunConfig) -> dict[str, Any]:
    """The recipe as a dict with credentials removed from every endpoint URL: what may be written to disk."""
    from reflectrl.teachers.openai_compat import redact_url

    values = to_dict(config)
    for section in (values["teacher"], (values["eval"] or {}).get("endpoint")):
        if section and section.get("base_url"):
            section["base_url"] = redact_url(section["base_url"])
    return values


def save_config(config: RunConfig, path: str | Path) -> None:
    from reflectrl.run_files import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(redacted_dict(config), sort_keys=False))


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
