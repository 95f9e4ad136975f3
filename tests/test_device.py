"""Device-correctness without a GPU: every tensor of SFT, the RL update and evaluation follows its model.

The models are moved to the ``meta`` device, which has shapes and dtypes but no
data, and every torch call runs under a ``TorchFunctionMode`` that records
each call whose tensor arguments sit on different devices (a 0-dim CPU tensor
is a scalar and mixes legitimately, as on CUDA). A tensor made on the CPU and
combined with a model's activations, which crashes on a GPU, is such a call.
Where the code reads values back (``.tolist()``, ``.item()``, ``.cpu()``), the
mode answers with plausible CPU data (ones, zeros), so the code runs on
through its control flow.
"""

from __future__ import annotations

import random
import traceback

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from reflectrl.agent.models import LoraSettings, ModelSpec, load_model
from reflectrl.agent.policy import ActionPolicy
from reflectrl.agent.reflector import Reflector
from reflectrl.agent.rollout import rollout
from reflectrl.config import RLConfig, SFTConfig
from reflectrl.data.sft_sets import build_sets
from reflectrl.data.trajectories import generate_examples
from reflectrl.envs.registry import make_env
from reflectrl.teachers.oracle import OracleTeacher
from reflectrl.train.rl import Learner, reinforce_batch
from reflectrl.train.sft import _encode_all, _loss_sum

from rl_fixtures import TINY, taxi_texts

_READ_BACK = {torch.Tensor.tolist, torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.__int__,
              torch.Tensor.__bool__, torch.Tensor.__index__}


class DeviceMismatch(AssertionError):
    """A torch call got tensors on different devices: on a GPU this call would crash."""


class DeviceChecker(TorchFunctionMode):
    """Stops at the first torch call that mixes devices, naming it and where it was made; answers
    read-backs of meta tensors with CPU stand-ins."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        devices = {t.device for t in tensors if t.dim() > 0 or t.device.type != "cpu"}
        if len(devices) > 1:
            where = "".join(traceback.format_stack(limit=8)[:-1])
            raise DeviceMismatch(f"{getattr(func, '__name__', func)} got tensors on {sorted(map(str, devices))}:\n{where}")
        if tensors and tensors[0].is_meta:
            if func in _READ_BACK:
                stand_in = torch.zeros(tensors[0].shape, dtype=tensors[0].dtype)
                return func(stand_in, *args[1:], **kwargs)
            if func is torch.Tensor.cpu or (func is torch.Tensor.to and _to_cpu(args, kwargs)):
                return torch.ones(tensors[0].shape, dtype=kwargs.get("dtype", tensors[0].dtype))
        return func(*args, **kwargs)


def _to_cpu(args, kwargs) -> bool:
    target = kwargs.get("device", args[1] if len(args) > 1 else None)
    return isinstance(target, (str, torch.device)) and torch.device(target).type == "cpu"


@pytest.fixture(autouse=True)
def meta_masks():
    """Boolean-mask indexing on meta tensors needs a size: take every element (shapes only matter here)."""
    import torch.fx.experimental._config as fx_config

    with fx_config.patch(meta_nonzero_assume_all_nonzero=True):
        yield


@pytest.fixture(scope="module")
def taxi_rows():
    env = make_env("taxi", stage="pickup")
    examples = list(generate_examples(env, OracleTeacher("taxi", 0), env.tasks("train"), 4, 0.3, 1, seed=0))
    return build_sets(examples)


@pytest.fixture(scope="module")
def tokenizer():
    return load_model(ModelSpec(name="tiny", **TINY), texts=taxi_texts(12))[1]


def _on_meta(tokenizer, lora: bool = False):
    spec = ModelSpec(name="tiny", **TINY, dtype="bfloat16", lora=LoraSettings(r=4) if lora else None)
    model, _ = load_model(spec, tokenizer=tokenizer)
    return model.to("meta")


def test_the_checker_catches_a_cpu_tensor_meeting_a_model_tensor():
    with pytest.raises(DeviceMismatch, match="add"), DeviceChecker():
        torch.ones(3, device="meta") + torch.ones(3)
    with DeviceChecker():
        torch.ones(3, device="meta") * torch.tensor(2.0)  # a CPU scalar mixes legitimately, as on CUDA


@pytest.mark.parametrize("kind", ["reflection", "policy", "policy-text"])
def test_sft_step_stays_on_the_models_device(tokenizer, taxi_rows, kind):
    model = _on_meta(tokenizer, lora=kind != "reflection")
    config = SFTConfig(max_length=256)
    policy = None
    if kind != "reflection":
        policy = ActionPolicy(model, tokenizer, max_length=256, dtype="bfloat16", scoring=kind.partition("-")[2] or "id")
    rows = taxi_rows["reflection" if kind == "reflection" else "policy"][:4]
    with DeviceChecker():
        encoded = _encode_all(rows, "reflection" if policy is None else "policy", tokenizer, policy, config.max_length,
                              random.Random(0))
        loss, _ = _loss_sum(model, tokenizer, policy, encoded, "bfloat16")
        loss.backward()
        torch.optim.AdamW([p for p in model.parameters() if p.requires_grad]).step()


@pytest.mark.parametrize(("algorithm", "scoring"), [("reinforce", "id"), ("ppo", "id"), ("ppo", "text")])
def test_rollout_with_reflection_and_rl_update_stay_on_the_models_device(tokenizer, algorithm, scoring):
    from accelerate import Accelerator

    config = RLConfig(algorithm=algorithm, kl_coef=0.1, entropy_coef=0.01, minibatch_size=4)
    value_head = torch.nn.Linear(TINY["n_embd"], 1).to("meta") if algorithm == "ppo" else None
    policy = ActionPolicy(_on_meta(tokenizer, lora=True), tokenizer, max_length=256, dtype="bfloat16",
                          value_head=value_head, scoring=scoring)
    reference = ActionPolicy(_on_meta(tokenizer), tokenizer, max_length=256, dtype="bfloat16", scoring=scoring)
    reflector = Reflector(_on_meta(tokenizer), tokenizer, max_new_tokens=4, temperature=1.0, probability=0.5,
                          dtype="bfloat16")
    envs = [make_env("taxi", stage="pickup", max_steps=3) for _ in range(3)]
    with DeviceChecker():
        episodes = rollout(envs, envs[0].tasks("train")[:3], [0, 1, 2], policy, reflector, temperature=0.7,
                           rng=random.Random(0), generator=torch.Generator().manual_seed(0),
                           final_prompts=algorithm == "ppo")
        learner = Learner(policy, config, Accelerator(cpu=True), reference)
        batch = reinforce_batch(episodes, 1.0, "mean")
        if algorithm == "ppo":
            batch.returns = torch.zeros(len(batch.steps))
        learner.update(batch)


@pytest.mark.parametrize("scoring", ["id", "text"])
def test_greedy_evaluation_rollout_stays_on_the_models_device(tokenizer, scoring):
    policy = ActionPolicy(_on_meta(tokenizer), tokenizer, max_length=256, scoring=scoring)
    reflector = Reflector(_on_meta(tokenizer), tokenizer, max_new_tokens=4)
    envs = [make_env("taxi", stage="full", max_steps=2) for _ in range(2)]
    with DeviceChecker():
        rollout(envs, envs[0].tasks("test")[:2], [0, 1], policy, reflector, greedy=True)
