"""Recipes: YAML files mapped onto dataclasses, validated by pydantic when they load.

Every key of a recipe maps to a dataclass field with its type and range; an
unknown key, a value of the wrong type or out of range is an error that names
the key (``rl.lr: Input should be greater than 0 (got -0.1)``), so a typo
never silently falls back to a default and a bad number never fails later
with a raw traceback. Numbers are strict: a boolean is not a number, inf and
nan are not accepted, integers fit 64 bits (seeds 32); a key given twice in
the YAML is an error, as is an env or model name that cannot be found and a
key the recipe's algorithm would ignore.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, ConfigDict, Field, Strict, StrictBool, TypeAdapter, ValidationError

from reflectrl.agent.model_spec import (
    INT64_MAX,
    SMOLLM2,
    TINY,
    LoraSettings,
    ModelSpec,
    Seed,
    local_model_problem,
    smollm2_gguf_path,
)
from reflectrl.agent.prompts import reflection_prompt_budget
from reflectrl.envs.registry import list_envs
from reflectrl.errors import UserError
from reflectrl.recipe_yaml import parse_yaml
from reflectrl.run_files import unwritable_reason


class ConfigError(UserError):
    """A recipe key or value that is not accepted."""


PositiveInt = Annotated[int, Strict(), Field(ge=1, le=INT64_MAX)]
Count = Annotated[int, Strict(), Field(ge=0, le=INT64_MAX)]
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]
NonNegative = Annotated[float, Strict(), Field(ge=0)]
Probability = Annotated[float, Strict(), Field(ge=0, le=1)]
#: every section rejects keys it does not know, and inf or nan where it wants a number
_STRICT_KEYS = ConfigDict(extra="forbid", allow_inf_nan=False)


def _known_env(name: str) -> str:
    """A registered env or a ``module:Class`` import path (imported only when the env is built)."""
    if name not in list_envs() and ":" not in name:
        raise ValueError(f"unknown env; known envs: {', '.join(list_envs())}, or a module:Class import path")
    return name


def _folder_name(name: str) -> str:
    """A run's name is one folder under ``out_dir``: a name that climbs out of it (``..``, ``a/../..``) or
    is ``out_dir`` itself (``.``) would write, and on a rerun replace, files outside the run directory."""
    if name in ("", ".", "..") or "/" in name or "\\" in name or any(ord(char) < 32 for char in name):
        raise ValueError("must be a plain folder name (the run directory is out_dir/name): not empty, '.' or "
                         "'..', without '/', '\\' or control characters; to place runs elsewhere set out_dir")
    return name


def _findable_model(spec: ModelSpec) -> ModelSpec:
    """A model ``load_model`` will find, checked without loading it, so that a typo fails before any work.

    With ``allow_hub`` a hub id is taken on trust: only downloading it would tell.
    """
    name = spec.name
    if name == TINY:
        return spec
    local = Path(name).expanduser()
    if local.is_dir() or local.is_file():
        problem = local_model_problem(local, repr(name))
        if problem is not None:
            raise ValueError(problem)
        return spec
    if spec.allow_hub:
        return spec
    if name == SMOLLM2:
        try:
            smollm2_gguf_path()
        except (ImportError, OSError) as error:
            raise ValueError(str(error)) from None
        return spec
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not even the form of a hub id
        cached = False
    if not cached:
        raise ValueError(f"name {name!r} is neither {TINY!r}, {SMOLLM2!r}, a local directory, a .gguf file nor a "
                         "Hugging Face model in the local cache (set allow_hub: true to download it)")
    return spec


@dataclass
class EnvConfig:
    __pydantic_config__ = _STRICT_KEYS

    name: Annotated[str, AfterValidator(_known_env)] = "taxi"
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
    #: the AutoExplore oracle only: right after a ``cat`` its reflection first quotes the line of what was
    #: shown nearest the question, then says whether that is the question's sentence (the evidence before
    #: the verdict, where a small reflector can copy it); false: the verdict alone
    quote_reads: StrictBool = False


@dataclass
class DataConfig:
    __pydantic_config__ = _STRICT_KEYS

    #: teacher trajectories on training tasks
    episodes: PositiveInt = 200
    #: probability that a step of a positive trajectory takes a random action
    random_action_prob: Probability = 0.3
    #: negative examples per trajectory (replay to step h, wrong action, correction)
    negatives_per_episode: Count = 1
    #: how a negative example picks its wrong action: ``random`` (any listed action that is not good) or
    #: ``plausible`` (the one that looks best to an agent without the oracle's knowledge, by the env's
    #: ``plausibility``: AutoExplore's file or directory whose name shares most words with the question),
    #: the kind of mistake a trained policy makes, where a random one is mostly a plainly unrelated move
    negatives: Literal["random", "plausible"] = "random"
    #: fraction of examples kept aside for validation
    val_fraction: Probability = 0.1
    #: curriculum stage/level kwargs to generate data on (env kwargs overrides); empty = env.kwargs only
    stages: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ReflectorSFTConfig:
    """SFT settings of the reflector: those of ``SFTConfig`` but ``shuffle_ids`` (its examples name no action ids)."""

    __pydantic_config__ = _STRICT_KEYS

    epochs: PositiveFloat = 3.0
    lr: PositiveFloat = 1e-3
    batch_size: PositiveInt = 16
    grad_accum: PositiveInt = 1
    weight_decay: NonNegative = 0.0
    warmup_ratio: Probability = 0.05
    max_length: Annotated[int, Strict(), Field(ge=2, le=INT64_MAX)] = 1024
    eval_every: Count = 100
    save_every: Count = 0
    max_steps: Count = 0
    #: split each batch into micro-batches of at most this many padded tokens (rows x longest row),
    #: accumulating gradients: the same update in less memory; 0 = the whole batch at once
    max_batch_tokens: Count = 0
    #: recompute activations in the backward pass instead of keeping them (less memory, ~30% more time)
    gradient_checkpointing: StrictBool = False


@dataclass
class SFTConfig(ReflectorSFTConfig):
    """SFT settings of the policy, and of the reflector where the recipe gives no ``reflector_sft``."""

    #: shuffle which id names which action in policy examples
    shuffle_ids: StrictBool = True
    #: the reflections the policy that reads them learns from: "teacher" (the teacher's, always right:
    #: the policy learns to do what they say) or "reflector" (what the SFT'd reflector writes for each
    #: state, greedy, by a reflector that never trained on that task: the policy meets the mistakes of
    #: the reflector it will read, and learns when to follow it)
    reflections: Literal["teacher", "reflector"] = "teacher"


@dataclass
class CurriculumConfig:
    __pydantic_config__ = _STRICT_KEYS

    #: "schedule": levels get steps in proportion to their size (paper); "success": promote on moving success
    kind: Literal["schedule", "success"] = "schedule"
    #: list of env kwargs, one per level (e.g. [{stage: pickup}, {stage: dropoff}, {stage: full}])
    levels: list[dict[str, Any]] = field(default_factory=list)
    #: relative sizes for the schedule kind (default: number of train tasks of each level)
    weights: list[Annotated[float, Strict()]] = field(default_factory=list)
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
    #: REINFORCE only: "none" (the paper; the default) or "mean" (subtract the batch's mean return-to-go)
    baseline: Literal["none", "mean"] | None = None
    #: steps per forward/backward chunk (gradients accumulate over the whole batch)
    minibatch_size: PositiveInt = 32
    temperature: PositiveFloat = 1.0
    entropy_coef: NonNegative = 0.0
    kl_coef: NonNegative = 0.0
    #: REINFORCE only (the paper's replay of recent successes): episodes kept (default 50) and
    #: replayed per iteration (default 16)
    replay_size: Count | None = None
    replay_batch: Count | None = None
    #: PPO
    ppo_epochs: PositiveInt = 3
    clip: Annotated[float, Strict(), Field(gt=0, lt=1)] = 0.1
    value_coef: NonNegative = 0.5
    gae_lambda: Probability = 0.95
    #: group baseline: rollouts per task (batch_episodes is a whole number of groups)
    group_size: PositiveInt = 4
    shuffle_ids: StrictBool = False
    checkpoint_every: Count = 20
    #: every this many iterations (and before the first and after the last), play held-out validation
    #: tasks greedily (actions and reflections) and log their success beside training's; 0 = never
    eval_every: Count = 0
    #: validation episodes per curriculum level: that many of the level's val tasks, the same each time
    eval_episodes: PositiveInt = 16

    def __post_init__(self) -> None:
        reinforce_only = [key for key in ("baseline", "replay_size", "replay_batch") if getattr(self, key) is not None]
        if self.algorithm != "reinforce" and reinforce_only:
            raise ValueError(f"{', '.join(reinforce_only)}: used by algorithm reinforce only, not {self.algorithm}")
        if self.algorithm == "reinforce":
            # REINFORCE's defaults filled in here, so the recipe saved beside a run names the values it ran with
            self.baseline = self.baseline or "none"
            self.replay_size = 50 if self.replay_size is None else self.replay_size
            self.replay_batch = 16 if self.replay_batch is None else self.replay_batch
        if self.algorithm == "group" and self.batch_episodes % self.group_size:
            raise ValueError(f"batch_episodes ({self.batch_episodes}) must be a multiple of group_size "
                             f"({self.group_size}): each task is played by one whole group")


@dataclass
class EvalConfig:
    __pydantic_config__ = _STRICT_KEYS

    episodes: PositiveInt = 100
    #: "heldout" = val + test: tasks never trained on (val only gives SFT its validation loss)
    split: Literal["train", "val", "test", "heldout"] = "test"
    greedy: StrictBool = True
    #: play held-out tasks again (with new seeds) until ``episodes`` is reached; set false where a
    #: task fixes the whole episode (a taxi start state) and play is greedy: repeats would only
    #: copy results and make the interval look narrower than the evidence
    repeat_tasks: StrictBool = True
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

    name: Annotated[str, AfterValidator(_folder_name)] = "run"
    seed: Seed = 0
    #: torch threads per process (0 = torch's default: every core, or cores / jobs with ``jobs: 2``)
    threads: Count = 0
    #: 2 = ``reflectrl run`` plays the no-reflection arms (their policy SFT, RL and evaluation, and the
    #: random and oracle baselines) in a second process beside the reflection arms: two models in memory
    jobs: Annotated[int, Strict(), Field(ge=1, le=2)] = 1
    out_dir: str = "runs"
    env: EnvConfig = field(default_factory=EnvConfig)
    model: Annotated[ModelSpec, AfterValidator(_findable_model)] = field(default_factory=ModelSpec)
    #: the reflector's model; None = same spec as the policy
    reflector_model: Annotated[ModelSpec, AfterValidator(_findable_model)] | None = None
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
    reflector_sft: ReflectorSFTConfig | None = None
    rl: RLConfig = field(default_factory=RLConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    #: "basic": the paper's main arms; "full": also without negatives and RL without SFT
    ablations: Literal["basic", "full"] = "basic"

    def __post_init__(self) -> None:
        reason = unwritable_reason(self.run_dir, "folder")
        if reason is not None:
            raise ValueError(f"out_dir/name: the run directory cannot be made: {reason}")
        if self.teacher.quote_reads and (self.teacher.kind, self.env.name) != ("oracle", "autoexplore"):
            raise ValueError("teacher.quote_reads: only the oracle teacher of autoexplore quotes what was read")
        if self.teacher.quote_reads and self.env.kwargs.get("expert") == "search":
            raise ValueError("teacher.quote_reads: the teacher of the search expert (env.kwargs.expert: search) "
                             "does not quote; it judges what was shown in its own words")
        if self.eval.endpoint is not None and self.eval.endpoint.quote_reads:
            raise ValueError("eval.endpoint.quote_reads: a setting of the oracle teacher, not of an endpoint")
        for key, budget, spec in (("sft.max_length", self.sft.max_length, self.model),
                                  ("reflector_sft.max_length" if self.reflector_sft is not None else "sft.max_length",
                                   self.reflector_training.max_length, self.reflector_spec)):
            if spec.name == TINY and budget > spec.n_positions:
                model_key = "model" if spec is self.model else "reflector_model"
                raise ValueError(f"{key}: {budget} positions, more than the tiny model reads ({model_key}.n_positions: "
                                 f"{spec.n_positions}); lower it or raise {model_key}.n_positions")
        try:  # the reflector's one prompt budget, with the smallest special prefix (the tokenizer's is known later)
            reflection_prompt_budget(self.reflector_training.max_length, self.reflection_tokens, prefix=0)
        except UserError as error:
            key = "reflector_sft.max_length" if self.reflector_sft is not None else "sft.max_length"
            raise ValueError(f"{key}: {error}") from None
        if self.sft.reflections == "reflector" and self.ablations == "full":
            raise ValueError("sft.reflections: reflector is for the basic arms only: the ablation without "
                             "negative examples would need reflectors trained without them on each fold")

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    @property
    def reflector_spec(self) -> ModelSpec:
        """The reflector's model: ``reflector_model``, else the policy's."""
        return self.reflector_model or self.model

    @property
    def reflector_training(self) -> SFTConfig:
        """The reflector's SFT settings: ``reflector_sft``, else ``sft``. Its ``max_length`` is the
        reflector's prompt budget everywhere (SFT, RL, evaluation), as ``sft.max_length`` is the policy's."""
        return self.reflector_sft or self.sft


_SECTIONS = (EnvConfig, TeacherConfig, DataConfig, SFTConfig, ReflectorSFTConfig, CurriculumConfig, RLConfig,
             EvalConfig)


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
        section = next((c for c in (*_SECTIONS, ModelSpec, LoraSettings) if re.search(rf"\b{c.__name__}\b", name)),
                       None)
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


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a recipe (``None``: the defaults); ``overrides`` are dotted keys (``{"rl.iterations": 5}``) applied on top."""
    values: Any = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            values = parse_yaml(path.read_text())
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"config file {path} cannot be read: {error}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from error
        if values is None:  # an empty (or all-comment) file: most likely not the recipe meant
            raise ConfigError(f"config file {path} sets nothing (it is empty or only comments): start from one of "
                              "configs/*.yaml")
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
    "ReflectorSFTConfig",
    "RLConfig",
    "RunConfig",
    "SFTConfig",
    "TeacherConfig",
    "from_dict",
    "load_config",
    "save_config",
    "to_dict",
]
