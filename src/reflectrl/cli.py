"""The ``reflectrl`` command line: play, tasks, data, sft, rl, eval, run, and reading and exporting runs."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml

from reflectrl.envs.registry import list_envs, make_env
from reflectrl.errors import UserError
from reflectrl.recipe_yaml import parse_yaml


class UsageError(UserError):
    """A command-line value that cannot be used."""


def _check_output(path: str | None, kind: str, flag: str) -> None:
    """An output that cannot be written is a usage error before the work that would fill it."""
    from reflectrl.run_files import unwritable_reason

    reason = None if path is None else unwritable_reason(path, kind)
    if reason is not None:
        raise UsageError(f"{flag}: {reason}")


def _key_values(pairs: list[str], flag: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            values[key] = parse_yaml(raw)
        except yaml.YAMLError as error:
            raise UsageError(f"{flag} {key}: {raw!r} is not a valid value ({str(error).splitlines()[0]})") from None
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _cmd_play(args: argparse.Namespace) -> int:
    from reflectrl.eval.baselines import HumanAgent, OracleAgent, RandomAgent, play_episode

    env = make_env(args.env, **_key_values(args.env_arg, "--env-arg"))
    agents = {"human": HumanAgent, "random": lambda: RandomAgent(args.seed), "oracle": OracleAgent}
    agent = agents[args.agent]()
    verbose = not args.quiet

    def show(observation, action_text: str, reward: float) -> None:
        if args.agent != "human":  # a human was shown the state before choosing
            print(observation.text)
        print(f">>> {action_text}   (reward {reward:+.3f})\n")

    results = []
    for episode in range(args.episodes):
        if verbose:
            print(f"=== episode {episode + 1}/{args.episodes} ===")
        result = play_episode(env, agent, seed=args.seed + episode, on_step=show if verbose else None)
        results.append(result)
        if verbose:
            print(f"--- {'success' if result.success else 'failure'}: return {result.episode_return:+.3f}, "
                  f"{result.steps} steps\n")
    print(
        f"env={args.env} agent={args.agent} episodes={len(results)} "
        f"success={statistics.fmean(r.success for r in results):.2f} "
        f"mean_return={statistics.fmean(r.episode_return for r in results):+.3f} "
        f"mean_steps={statistics.fmean(r.steps for r in results):.2f}"
    )
    return 0


def _cmd_tasks_build(args: argparse.Namespace) -> int:
    """Build and write a task file, or say why it would not serve (no file written): every split needs a task."""
    from reflectrl.envs.autoexplore import AutoExplore
    from reflectrl.envs.autoexplore.tasks import SPLITS, RepoSpec, build_tasks, task_counts, write_tasks
    from reflectrl.errors import UserError

    for root in args.root:
        if not os.path.isdir(root):
            raise UserError(f"tasks build: --root {root} is not a directory")
    _check_output(args.out, "file", "tasks build: --out")
    roots = ", ".join(args.root)
    tasks = build_tasks([RepoSpec.from_path(root) for root in args.root])
    if not tasks:
        raise UserError(f"tasks build: no task could be generated from {roots} (no file there yields a question)")
    counts = task_counts(tasks)
    empty = [split for split in SPLITS if split not in counts]
    if empty:
        raise UserError(
            f"tasks build: the {len(tasks)} task(s) from {roots} leave the {' and '.join(empty)} split(s) empty: "
            "one or two repositories are split 7:2:1 by question, which needs 3 tasks from one of them (three or "
            "more are split by repository); add files or repositories"
        )
    write_tasks(tasks, args.out)
    print(f"wrote {len(tasks)} tasks to {args.out}")
    print(counts)
    bound = AutoExplore(tasks=tasks).action_bound()
    print(f"at most {bound.count} actions in one step ({bound.where}; a policy with action_scoring: id needs "
          "as many single-token ids)")
    return 0


def _load(args: argparse.Namespace, models: bool = True):
    """The recipe of a command; where it runs ``models``, their thread count is applied as `run` applies
    it and transformers' per-file progress bars and notices are quieted (an agent without a model, as an
    endpoint, loads neither torch's models nor transformers)."""
    from reflectrl.config import load_config

    if models:
        from reflectrl.agent.models import quiet_transformers

        quiet_transformers()  # first, as before any model is touched: also where the recipe is then refused
    config = load_config(args.config, _key_values(args.set, "--set"))
    if models:
        from reflectrl.pipeline import set_threads

        set_threads(config)
    return config


def _cmd_data(args: argparse.Namespace) -> int:
    from reflectrl.pipeline import step_data

    if args.env:
        args.set += [f"env.name={args.env}"]
    if args.teacher:
        args.set += [f"teacher.kind={args.teacher}"]
    args.set += [f"teacher.{key}={getattr(args, key)}" for key in ("timeout", "attempts") if getattr(args, key)]
    config = _load(args)
    data_dir = step_data(config)
    print((data_dir / "done.json").read_text())
    return 0


def _cmd_sft(args: argparse.Namespace) -> int:
    from reflectrl.pipeline import policy_sft, reflector_sft

    config = _load(args)
    if args.set_name in ("reflection", "reflection_pos"):
        out_dir = reflector_sft(config, negatives=args.set_name == "reflection")
    else:
        # the same starting point as `reflectrl run` (policy_init), running the steps it needs first
        out_dir = policy_sft(config, args.set_name)
    print((out_dir / "sft_metrics.json").read_text())
    return 0


def _cmd_rl(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from reflectrl.train.rl import train_rl

    _check_output(args.out, "folder", "--out (the folder for checkpoints, metrics and final/)")
    config = _load(args)
    history = train_rl(config, args.policy, args.out, args.reflector, resume=not args.restart)
    # under `accelerate launch`: a process that exits with its process group alive can abort in
    # the collective library's threads (SIGABRT) while its peer is going away
    PartialState().destroy_process_group()
    if history:
        last = history[-1]
        print(f"iterations={last['iteration']} env_steps={last['env_steps']} success={last['success']:.2f}")
    return 0


def episodes_beside(out: str | os.PathLike) -> Path:
    """Where ``reflectrl eval --out metrics.json`` keeps the transcripts: ``metrics.episodes.jsonl``."""
    path = Path(out)
    return path.with_name(f"{path.stem if path.suffix == '.json' else path.name}.episodes.jsonl")


def _cmd_eval(args: argparse.Namespace) -> int:
    from reflectrl.eval.baselines import OracleAgent, RandomAgent
    from reflectrl.eval.evaluate import EvalPlan, evaluate_agent, evaluate_model
    from reflectrl.run_files import write_json_atomic, write_jsonl_atomic

    _check_output(args.out, "file", "--out")
    _check_output(args.cache_dir, "folder", "--cache-dir")
    config = _load(args, models=args.agent == "model")
    plan = EvalPlan.from_config(config)
    episodes: list[dict[str, Any]] = []
    if args.agent == "random":
        result = evaluate_agent(plan, lambda: RandomAgent(config.seed), desc="random", episodes=episodes)
    elif args.agent == "oracle":
        result = evaluate_agent(plan, OracleAgent, desc="oracle", episodes=episodes)
    elif args.agent == "endpoint":
        from reflectrl.config import TeacherConfig
        from reflectrl.eval.endpoint_agent import EndpointAgent
        from reflectrl.teachers.openai_compat import ChatEndpoint

        recipe = config.eval.endpoint or TeacherConfig(base_url="http://127.0.0.1:8000/v1")
        endpoint = ChatEndpoint(args.base_url or recipe.base_url, args.model or recipe.model,
                                args.api_key_env or recipe.api_key_env, cache_dir=args.cache_dir or recipe.cache_dir,
                                timeout=args.timeout or recipe.timeout,
                                max_retries=(args.attempts or recipe.attempts) - 1)
        result = evaluate_agent(plan, lambda: EndpointAgent(endpoint), desc="endpoint", episodes=episodes)
    else:
        if not args.policy:
            raise UsageError("--agent model needs --policy PATH")
        from reflectrl.pipeline import model_eval_settings

        result = evaluate_model(plan, args.policy, args.reflector, episodes=episodes,
                                **model_eval_settings(config, config.eval.greedy))
    if args.out:
        write_jsonl_atomic(episodes, episodes_beside(args.out))
        write_json_atomic(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from reflectrl.eval.report import results_table
    from reflectrl.pipeline import run_pipeline

    config = _load(args)
    command = " ".join(["reflectrl", *sys.argv[1:]])
    if args.seeds:
        from reflectrl.seeds import SEEDS_DIR, run_seeds, summary_table

        print(summary_table(run_seeds(config, args.seeds, command)))
        print(f"\nsummary: {config.run_dir / SEEDS_DIR / 'summary.md'}")
        return 0
    arms = run_pipeline(config, command=command)
    print(results_table(arms, config.env.name))
    print(f"\nreport: {config.run_dir / 'report.md'}")
    return 0


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds separated by commas (0,1,2), got {text!r}") from None
    if not seeds or any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct non-negative seeds (0,1,2), got {text!r}")
    return seeds


def _run_dir(name: str) -> Path:
    """A run directory as a path, or by its name under runs/."""
    run = Path(name)
    return Path("runs") / name if not run.is_dir() and (Path("runs") / name).is_dir() else run


def _evaluated_arms(name: str, arm: str) -> tuple[Path, list[str]]:
    """The run directory ``name`` names (a path, or a name under runs/) and its evaluated arms, ``arm``
    among them."""
    from reflectrl.errors import UserError
    from reflectrl.eval.episodes import EPISODES_FILE, evaluated_arms

    run = _run_dir(name)
    evaluated = list(evaluated_arms(run))
    if not evaluated:
        raise UserError(f"{run} holds no evaluated arm (no eval/<arm>/{EPISODES_FILE}); name a run directory "
                        f"that `reflectrl run` has evaluated")
    if arm not in evaluated:
        raise UserError(f"--arm {arm}: {run} has no episodes of it; evaluated arms: {', '.join(evaluated)}")
    return run, evaluated


def _cmd_show(args: argparse.Namespace) -> int:
    from reflectrl.errors import UserError
    from reflectrl.eval.episodes import episodes_file, failure_breakdown, format_episode, read_episodes

    run, _ = _evaluated_arms(args.run, args.arm)
    path = episodes_file(run / "eval" / args.arm, sampled=args.sampled)
    if path is None:
        raise UserError(f"{run / 'eval' / args.arm} holds no sampled episodes: the recipe played no sampled "
                        f"evaluation (eval.sampled_repeats)")
    records = read_episodes(path)
    for flag, key, value in (("--level", "level", args.level), ("--outcome", "outcome", args.outcome)):
        known = sorted({record[key] for record in records})
        if value is not None and value not in known:
            raise UserError(f"{flag} {value!r}: none of the episodes in {path} has that {key}; they have: "
                            f"{', '.join(known) or 'nothing'}")
    chosen = [r for r in records if (not args.failed or not r["success"]) and (args.level in (None, r["level"]))
              and (args.outcome in (None, r["outcome"]))]
    print(f"{path}: {len(records)} episodes; {len(chosen)} shown; how they end: "
          + "; ".join(f"{level}: " + ", ".join(f"{kind} {n}" for kind, n in counts.items())
                      for level, counts in failure_breakdown(records).items()))
    numbered = list(enumerate(chosen, 1))
    if args.episode is not None:
        if not 1 <= args.episode <= len(chosen):
            raise UserError(f"--episode {args.episode}: there are {len(chosen)} episodes to show (1..{len(chosen)})")
        numbered = [numbered[args.episode - 1]]
    for number, record in numbered:
        print(f"\n=== episode {number} of {len(chosen)} ===")
        print(format_episode(record))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from reflectrl.eval.episodes import evaluated_arms, read_episodes
    from reflectrl.eval.report import paired_table

    if (args.run is None) == (not args.episodes):
        raise UsageError("name a run directory, or the episodes to compare with --episodes ARM=FILE (not both)")
    if args.run is not None:
        run, _ = _evaluated_arms(args.run, args.arm)
        paths = evaluated_arms(run, sampled=args.sampled)
        source = f"{run} ({'sampled' if args.sampled else 'greedy'} evaluation)"
    else:
        paths = {}
        for pair in args.episodes:
            arm, sep, path = pair.partition("=")
            if not sep or not arm or not Path(path).is_file():
                raise UsageError(f"--episodes expects ARM=FILE naming an episodes file (.jsonl or .jsonl.gz), "
                                 f"got {pair!r}")
            paths[arm] = Path(path)
        if args.arm not in paths:
            raise UsageError(f"--arm {args.arm}: not among the --episodes given ({', '.join(paths)})")
        source = ", ".join(str(path) for path in paths.values())
    episodes = {arm: read_episodes(path) for arm, path in paths.items()}
    table = paired_table(episodes, args.arm)
    if table is None:
        raise UsageError(f"no arm beside {args.arm} has episodes to pair with it in {source}")
    print(f"{args.arm} against each arm on the same tasks: {source}\n")
    print(table)
    return 0


def _cmd_summarize(args: argparse.Namespace) -> int:
    from reflectrl.seeds import summarize_runs, summary_table

    _check_output(args.out, "folder", "--out")
    summary = summarize_runs([Path(run) for run in args.runs], Path(args.out),
                             " ".join(["reflectrl", *sys.argv[1:]]))
    print(summary_table(summary))
    print(f"\nsummary: {Path(args.out) / 'summary.md'}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from reflectrl.eval.export import export_run

    _check_output(args.out, "folder", "out")
    written = export_run(_run_dir(args.run), args.out, " ".join(["reflectrl", *sys.argv[1:]]), overwrite=args.overwrite)
    print(f"{len(written)} files written under {args.out}; add to its run.md why the run took what it took "
          f"(a shared CPU, a resumed run)")
    return 0


def _config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", required=required, help="recipe YAML (configs/*.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set rl.iterations=10")


def _server_args(parser: argparse.ArgumentParser, section: str) -> None:
    """How long to wait for an LLM server: the recipe's ``{section}.timeout`` and ``.attempts``, overridden."""
    parser.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                        help=f"most seconds one request to the server may take (default: {section}.timeout, 60)")
    parser.add_argument("--attempts", type=_positive_int, metavar="N",
                        help=f"tries per request before giving up (default: {section}.attempts, 6)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reflectrl", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    # --debug also after the command; SUPPRESS keeps a subcommand from resetting a --debug given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    play = sub.add_parser("play", parents=[common], help="play an env with a human, random or oracle agent")
    play.add_argument("--env", required=True, choices=list_envs())
    play.add_argument("--agent", default="human", choices=["human", "random", "oracle"])
    play.add_argument("--episodes", type=_positive_int, default=1)
    play.add_argument("--seed", type=int, default=0)
    play.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE",
                      help="env constructor argument, e.g. --env-arg stage=pickup")
    play.add_argument("--quiet", action="store_true", help="print only the summary line")
    play.set_defaults(func=_cmd_play)

    tasks = sub.add_parser("tasks", parents=[common], help="AutoExplore task files")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", required=True)
    build = tasks_sub.add_parser("build", parents=[common], help="generate questions from real files of one or more repositories")
    build.add_argument("--root", required=True, action="append", help="repository root (repeatable)")
    build.add_argument("--out", required=True, help="output JSONL path")
    build.set_defaults(func=_cmd_tasks_build)

    data = sub.add_parser("data", parents=[common], help="teacher trajectories, negative examples and the SFT sets")
    _config_args(data, required=False)
    data.add_argument("--env", choices=list_envs())
    data.add_argument("--teacher", choices=["oracle", "openai"])
    _server_args(data, "teacher")
    data.set_defaults(func=_cmd_data)

    sft = sub.add_parser("sft", parents=[common], help="supervised warm-up of one model of a recipe")
    _config_args(sft)
    sft.add_argument("--set-name", default="policy",
                     choices=["reflection", "policy", "policy_noreflect", "reflection_pos", "policy_pos"])
    sft.set_defaults(func=_cmd_sft)

    rl = sub.add_parser("rl", parents=[common], help="online RL of a saved policy, with an optional frozen reflector")
    _config_args(rl)
    rl.add_argument("--policy", required=True, help="saved policy (an SFT output dir)")
    rl.add_argument("--reflector", help="saved reflector; omit for the no-reflection arm")
    rl.add_argument("--out", required=True, help="output dir (checkpoints, metrics, final/)")
    rl.add_argument("--restart", action="store_true",
                    help="start over from --policy: delete the checkpoints, final/ and logs of a run in --out")
    rl.set_defaults(func=_cmd_rl)

    ev = sub.add_parser("eval", parents=[common], help="evaluate an agent on held-out tasks")
    _config_args(ev)
    ev.add_argument("--agent", default="model", choices=["model", "random", "oracle", "endpoint"])
    ev.add_argument("--policy", help="saved policy dir (--agent model)")
    ev.add_argument("--reflector", help="saved reflector dir (--agent model)")
    ev.add_argument("--base-url", help="OpenAI-compatible server (--agent endpoint; default: the recipe's "
                    "eval.endpoint, else http://127.0.0.1:8000/v1)")
    ev.add_argument("--model", help="endpoint model name (default: the recipe's eval.endpoint.model)")
    ev.add_argument("--api-key-env", help="variable holding the API key (default: OPENAI_API_KEY)")
    ev.add_argument("--cache-dir", help="on-disk cache of endpoint replies")
    _server_args(ev, "eval.endpoint")
    ev.add_argument("--out", help="write the metrics JSON here, and every episode's transcript beside it "
                    "(metrics.json -> metrics.episodes.jsonl)")
    ev.set_defaults(func=_cmd_eval)

    show = sub.add_parser("show", parents=[common], help="print an evaluated arm's episodes for a person to read")
    show.add_argument("run", help="a run directory (runs/<name>), or its name under runs/")
    show.add_argument("--arm", default="reflect_rl", help="the arm whose episodes to show (default: reflect_rl)")
    show.add_argument("--failed", action="store_true", help="only episodes that failed")
    show.add_argument("--outcome", help="only episodes that ended this way (e.g. 'wall crash', horizon)")
    show.add_argument("--level", help="only episodes of this level (e.g. stage=full)")
    show.add_argument("--episode", type=_positive_int, help="only the N-th of the episodes selected")
    show.add_argument("--sampled", action="store_true", help="the sampled evaluation's episodes, not the greedy one's")
    show.set_defaults(func=_cmd_show)

    compare = sub.add_parser("compare", parents=[common],
                             help="one evaluated arm against each other, task by task (paired interval and test)")
    compare.add_argument("run", nargs="?", help="a run directory (runs/<name>), or its name under runs/")
    compare.add_argument("--episodes", action="append", default=[], metavar="ARM=FILE",
                         help="instead of a run: an arm's episodes file (as `reflectrl eval --out` writes them)")
    compare.add_argument("--arm", default="reflect_rl", help="the arm the others are compared with (default: reflect_rl)")
    compare.add_argument("--sampled", action="store_true", help="the sampled evaluation's episodes, not the greedy one's")
    compare.set_defaults(func=_cmd_compare)

    summarize = sub.add_parser("summarize", parents=[common],
                               help="the seed summary of runs of one recipe made apart (one run directory a seed)")
    summarize.add_argument("runs", nargs="+", help="run directories (each with config.yaml, eval.json, eval/<arm>/)")
    summarize.add_argument("--out", required=True, help="folder for summary.json and summary.md")
    summarize.set_defaults(func=_cmd_summarize)

    export = sub.add_parser("export", parents=[common],
                            help="a finished run's results to commit (results/<recipe>/): recipe, metrics, report, "
                                 "curves, run.json, gzipped episodes and a run.md")
    export.add_argument("run", help="a run directory (runs/<name>), or its name under runs/")
    export.add_argument("out", help="the folder to write, e.g. results/<recipe>")
    export.add_argument("--overwrite", action="store_true", help="replace files already in the folder")
    export.set_defaults(func=_cmd_export)

    run = sub.add_parser("run", parents=[common], help="the whole pipeline of a recipe: data, SFT, RL, eval, report")
    _config_args(run)
    run.add_argument("--seeds", type=_seed_list, metavar="S,S,...",
                     help="run the recipe once per seed (runs/<name>/seeds/seed-<s>/) and summarise the spread")
    run.set_defaults(func=_cmd_run)
    return parser


#: what a user can cause (a bad recipe, path, file, value or server): one line and exit code 2; anything
#: else (out of memory, a CUDA error, a bug) keeps its traceback and exit code
USER_ERRORS = (UserError,)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as error:
        if args.debug:
            raise
        print(f"error: {' '.join(str(error).split())} (--debug shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
