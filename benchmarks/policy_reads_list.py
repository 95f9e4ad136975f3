"""Can a recipe's policy learn to read the enumerated action list at all? A check before hours of SFT.

The policy answers with one id token, and ids are reshuffled every time a row
is drawn, so it can only be right by finding the line that holds the action and
reading its id. This trains the recipe's policy (e.g. SmolLM2 + LoRA) on its
``--rows`` shortest SFT rows, one batch of all of them per step (every step a
fresh shuffle of ids), and records the accuracy on those same rows (default
ids) every ``--eval-every`` steps. Reaching 100% says the id head, its
gradients and the adapter can do it; how many steps it takes says what the
full data needs. Time and peak RSS are recorded beside the curve.

    python benchmarks/policy_reads_list.py --config configs/autoexplore-smollm2.yaml

Writes ``benchmarks/results/policy_reads_list.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from reflectrl.agent.models import ModelSpec, load_model
from reflectrl.config import load_config
from reflectrl.data.sft_sets import read_jsonl
from reflectrl.memory import peak_rss_gb
from reflectrl.pipeline import step_base, step_data
from reflectrl.train.sft import train_sft

RESULT = Path(__file__).parent / "results" / "policy_reads_list.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/autoexplore-smollm2.yaml")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-episodes", type=int, help="teacher episodes to draw the rows from (default: the recipe's)")
    parser.add_argument("--run-dir", default="runs/bench-policy-reads-list", help="where its data and base model go")
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {"out_dir": args.run_dir, "sft.max_steps": args.steps, "sft.lr": args.lr, "sft.batch_size": args.rows,
                 "sft.eval_every": args.eval_every, "sft.shuffle_ids": True}
    if args.data_episodes:
        overrides["data.episodes"] = args.data_episodes
    config = load_config(args.config, overrides)
    data = step_data(config)
    base, _ = step_base(config, data)  # the policy's starting point in `reflectrl run` (policy_init: base)
    model, tokenizer = load_model(ModelSpec(**{**vars(config.model), "name": str(base)}))
    rows = read_jsonl(data / "train" / "policy.jsonl")
    lengths = [len(tokens) for tokens in tokenizer([row["prompt"] for row in rows])["input_ids"]]
    shortest = sorted(range(len(rows)), key=lengths.__getitem__)[:args.rows]
    rows = [rows[i] for i in shortest]
    started = time.time()
    with tempfile.TemporaryDirectory() as out:
        final = train_sft(model, tokenizer, rows, rows, config.sft, out, "policy", seed=config.seed,
                          dtype=config.model.dtype)
        records = [json.loads(line) for line in (Path(out) / "logs" / "metrics.jsonl").read_text().splitlines()]
    curve = [{"step": r["step"], "train_loss": round(r["loss"], 4), "loss": round(r["val_loss"], 4),
              "accuracy": r["val_action_accuracy"]} for r in records if "val_loss" in r and not r.get("final")]
    curve.append({"step": final["steps"], "train_loss": round(final["train_loss"], 4),
                  "loss": round(final["val_loss"], 4), "accuracy": final["val_action_accuracy"]})
    result = {
        "config": args.config, "model": config.model.name, "lora": vars(config.model.lora) if config.model.lora else None,
        "rows": len(rows), "steps": args.steps, "lr": args.lr, "seed": config.seed,
        "prompt_tokens": [lengths[i] for i in shortest],
        "actions_per_row": [len(row["actions"]) for row in rows],
        "curve": curve, "seconds": round(time.time() - started, 1), "peak_rss_gb": peak_rss_gb(),
        "machine": {"processor": platform.processor() or platform.machine(), "threads": args.threads,
                    "torch": torch.__version__},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("rows", "curve", "seconds", "peak_rss_gb")}, indent=2))


if __name__ == "__main__":
    main()
