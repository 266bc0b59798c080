"""Supervised ceiling (a diagnostic, not a way to train agents): how many labelled boards does the model
need before its first FrozenLake move depends on the board?

RL learns which move to make from one success bit per episode. Here the same model gets the best signal
there is instead: each training board comes with a move that starts a shortest frozen path to the goal
(``envs.frozenlake.shortest_path_moves``, one drawn at random when several do), and the model is trained
by plain supervised fine-tuning on the first-turn prompt the rollout engine builds (``conf/bench/frozenlake``,
``agents.rollout.opening``) followed by ``" <move> </answer>"`` (the answer-only reply after the prefill).
If even this needs N boards to beat the board-blind policies, RL that sees a few hundred episodes of
uncertain credit cannot be expected to, and the gap is the model's, not the algorithm's.

Measured on ``--eval-levels`` held-out levels (the validation levels, 123, 124, ...) after 0 and after each
``--eval-at`` count of training boards: the model's move is the one of the four one-move replies it gives
the highest likelihood; it is right when that move starts a shortest path. 95% intervals by bootstrap over
seeds, then levels (``algos.statistics``). Reference points on the same levels: a uniformly random move
(the mean share of optimal moves) and the best single move for every board. ``--policies DIR ...`` scores
exported policies (e.g. the RL runs' ``hf_model``) the same way. Whether the labels are fitted at all
(memorised without carrying over, or not even that) shows in the same choice scored on ``--fit-levels`` of the
training boards (``seen_board_accuracy``) and in the training NLL between evaluations (``train_nll``);
``--epochs`` passes over the same boards more than once::

    python scripts/bench_supervised_ceiling.py --seeds 0 1 --examples 1024 --eval-at 128 256 512 1024 \\
        --policies benchmarks/runs/learning_frozenlake/seed0/hf_model

Writes ``benchmarks/supervised_ceiling_frozenlake.json`` (``--out``), with every level's result. Seeds run
side by side as separate invocations (``--seeds 0 --out a.json`` and ``--seeds 1 --out b.json``) are
pooled into one record by ``--combine a.json b.json --out ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

import envs
from agents.config import AgentConfig
from agents.demonstrations import Demonstration, demonstration_reply
from agents.model import load_model_and_tokenizer, load_tokenizer
from agents.prompts import ChatTokenizer, pad_token_id, prefill_text
from agents.rollout import opening
from algos.statistics import hierarchical_bootstrap_ci
from algos.training.compose import compose_config
from algos.training.engine import cpu_autocast
from algos.training.format_warmup import demonstration_batch, reply_nll
from algos.training.packed_logprobs import grouped_response_log_probs
from envs.frozenlake import FrozenLakeEnv, shortest_path_moves

REPO = Path(__file__).resolve().parents[1]
FIRST_TRAIN_LEVEL = 10_000  # the training levels' range (bench_learning), apart from the validation levels
LEVELS_PER_SEED = 100_000


def labelled_board(env: FrozenLakeEnv, config: AgentConfig, chat: ChatTokenizer, level: int, max_new_tokens: int
                   ) -> tuple[list[int], list[int]]:
    """Level ``level``'s first-turn prompt ids (ending with the prefill) and its shortest-path first moves
    (``env`` is reset to it)."""
    messages, _ = opening(env, config, level, member=0, max_new_tokens=max_new_tokens)
    moves = shortest_path_moves(env.frozen, env.start, env.goal)
    return chat.prompt_ids(messages, prefill_text(config.agent_proxy.enable_think)), moves


def move_choices(model: torch.nn.Module, boards: list[tuple[list[int], list[int]]], replies: list[list[int]],
                 pad_id: int, bf16: str, chunk: int = 16) -> np.ndarray:
    """For each board, the index of the reply in ``replies`` (one per action) with the highest total
    log-likelihood after the board's prompt; ``chunk`` boards a forward, each prompt run once for its replies."""
    choices = []
    model.eval()
    with torch.no_grad(), cpu_autocast(bf16):
        for first in range(0, len(boards), chunk):
            levels = [[Demonstration(0, prompt, reply, "") for reply in replies]
                      for prompt, _ in boards[first:first + chunk]]
            input_ids, attention_mask, mask, group = demonstration_batch(levels, pad_id)
            logp, _ = grouped_response_log_probs(model, input_ids, attention_mask, mask, group, temperature=1.0)
            totals = (logp.float() * mask).sum(dim=1).view(len(levels), len(replies))
            choices += totals.argmax(dim=1).tolist()
    return np.array(choices)


def accuracy(choices: np.ndarray, boards: list[tuple[list[int], list[int]]]) -> np.ndarray:
    """1.0 where the chosen action starts a shortest path on that board, else 0.0."""
    return np.array([float(choice in moves) for choice, (_, moves) in zip(choices, boards, strict=True)])


def first_move_references(boards: list[tuple[list[int], list[int]]], actions: int) -> dict[str, float]:
    """Expected accuracy of a uniformly random move and of the best single move played on every board."""
    hit = np.array([[float(action in moves) for action in range(actions)] for _, moves in boards])
    return {"uniformly random move": float(hit.mean()), "best single move": float(hit.mean(axis=0).max())}


def train_and_evaluate(seed: int, args: argparse.Namespace, env: FrozenLakeEnv, config: AgentConfig, chat: ChatTokenizer,
                       eval_boards: list, max_new: int) -> dict[str, dict]:
    """Fine-tune a fresh copy of the base model for ``args.epochs`` passes over ``args.examples`` labelled
    boards of this seed's levels (shuffled each pass, a label drawn anew each time), ``args.batch`` boards an
    AdamW step. After 0 boards and after each count in ``args.eval_at`` (boards trained on, passes included):
    per-level accuracy on the held-out boards (``held_out``) and on the first ``args.fit_levels`` training
    boards (``seen``: how well the labels are fitted), and the mean training NLL of the reply tokens since
    the previous count (``train_nll``)."""
    torch.manual_seed(seed)
    model, _ = load_model_and_tokenizer(args.model)
    names, pad_id = env.action_names, pad_token_id(chat.tokenizer)
    replies = one_move_replies(chat, names)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    first = FIRST_TRAIN_LEVEL + LEVELS_PER_SEED * seed
    boards = {level: labelled_board(env, config, chat, level, max_new) for level in range(first, first + args.examples)}
    seen_boards = list(boards.values())[:args.fit_levels]
    run: dict[str, dict] = {"held_out": {}, "seen": {}, "train_nll": {}}

    def evaluate(count: int, losses: list[float]) -> None:
        run["held_out"][count] = accuracy(move_choices(model, eval_boards, replies, pad_id, args.bf16), eval_boards)
        run["seen"][count] = accuracy(move_choices(model, seen_boards, replies, pad_id, args.bf16), seen_boards)
        run["train_nll"][count] = float(np.mean(losses)) if losses else None
        print(f"seed {seed}: {count} boards, held-out {run['held_out'][count].mean():.3f}, "
              f"seen {run['seen'][count].mean():.3f}, train NLL {run['train_nll'][count]}", flush=True)

    evaluate(0, [])
    stream = [int(level) for _ in range(args.epochs) for level in rng.permutation(list(boards))]
    losses: list[float] = []
    for start in range(0, len(stream), args.batch):
        batch = []
        for level in stream[start:start + args.batch]:
            prompt, moves = boards[level]
            label = names[int(rng.choice(moves))]
            batch.append([Demonstration(level, prompt, chat.encode(demonstration_reply([label], False)), label)])
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with cpu_autocast(args.bf16):
            loss = reply_nll(model, batch, pad_id)  # one padded forward: the prompts differ by a few tokens
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if (seen := start + len(batch)) in args.eval_at:
            evaluate(seen, losses)
            losses = []
    return run


def one_move_replies(chat: ChatTokenizer, names: tuple[str, ...]) -> list[list[int]]:
    """The answer-only reply naming each action alone, as token ids (action order)."""
    return [chat.encode(demonstration_reply([name], enable_think=False)) for name in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--examples", type=int, default=1024, help="labelled training boards per seed")
    parser.add_argument("--epochs", type=int, default=1, help="passes over the --examples boards")
    parser.add_argument("--eval-at", type=int, nargs="+", default=[128, 256, 512, 1024],
                        help="evaluate after these many boards trained on (multiples of --batch, passes included)")
    parser.add_argument("--fit-levels", type=int, default=128,
                        help="training boards also scored, to see how well the labels are fitted")
    parser.add_argument("--eval-levels", type=int, default=128, help="held-out levels 123, 124, ...")
    parser.add_argument("--batch", type=int, default=8, help="boards per AdamW step")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--bf16", choices=("true", "false"), default="true", help="bf16 autocast (as actor.bf16)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None, help="starting model (default: the embedded SmolLM2-135M)")
    parser.add_argument("--policies", type=Path, nargs="*", default=[], help="exported policies to score as well")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "supervised_ceiling_frozenlake.json")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides on top of bench=frozenlake")
    parser.add_argument("--combine", type=Path, nargs="+", help="pool these records' seeds into --out, run nothing")
    args = parser.parse_args()
    if args.combine:
        return combine(args.combine, args.out)
    if args.epochs < 1 or args.fit_levels < 1:
        parser.error(f"--epochs {args.epochs} and --fit-levels {args.fit_levels} must be at least 1")
    total = args.examples * args.epochs
    bad = [count for count in args.eval_at if count % args.batch or not 0 < count <= total]
    if bad:
        parser.error(f"--eval-at {bad} is invalid; allowed: multiples of --batch {args.batch} up to "
                     f"--examples x --epochs = {total}")
    torch.set_num_threads(args.threads)
    full = compose_config(["bench=frozenlake", *args.overrides])
    config, max_new = full.agent_config(), full.actor_rollout_ref.rollout.response_length
    if config.env.name != "frozenlake" or config.agent_proxy.enable_think:
        raise SystemExit("the ceiling is defined for frozenlake with answer-only replies (agent_proxy.enable_think=false)")
    chat = ChatTokenizer(load_tokenizer(args.model))
    env = envs.make(config.env.name, **config.env.kwargs)
    first_val = full.es_manager.val_seed_start
    eval_boards = [labelled_board(env, config, chat, level, max_new)
                   for level in range(first_val, first_val + args.eval_levels)]
    start = time.perf_counter()
    runs = {seed: train_and_evaluate(seed, args, env, config, chat, eval_boards, max_new) for seed in args.seeds}
    replies, pad_id = one_move_replies(chat, env.action_names), pad_token_id(chat.tokenizer)
    policies = {}
    for path in args.policies:
        policy, _ = load_model_and_tokenizer(str(path))
        hits = accuracy(move_choices(policy, eval_boards, replies, pad_id, args.bf16), eval_boards)
        policies[str(path)] = hierarchical_bootstrap_ci(hits[None]).as_dict()
    record = {
        "env": "frozenlake", "overrides": args.overrides, "seeds": args.seeds, "eval_levels": args.eval_levels,
        "first_eval_level": first_val, "lr": args.lr, "batch": args.batch, "bf16": args.bf16,
        "examples": args.examples, "epochs": args.epochs, "fit_levels": args.fit_levels,
        "date": date.today().isoformat(), "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "minutes": (time.perf_counter() - start) / 60,
        "references": first_move_references(eval_boards, len(env.action_names)),
        "policies": policies,
        "per_level": per_seed(runs, "held_out"), "seen_per_level": per_seed(runs, "seen"),
        "train_nll": {str(seed): {str(count): nll for count, nll in run["train_nll"].items()} for seed, run in runs.items()},
    }
    write(with_curves(record), args.out)


def per_seed(runs: dict[int, dict[str, dict]], part: str) -> dict[str, dict[str, list[float]]]:
    """``runs``' per-level accuracies of ``part`` ("held_out" or "seen") as JSON: seed -> count -> hits."""
    return {str(seed): {str(count): hits.tolist() for count, hits in run[part].items()} for seed, run in runs.items()}


def with_curves(record: dict) -> dict:
    """``record`` with its accuracy curves over seeds: on the held-out boards and (records from before the
    fit was scored have none) on the seen training boards."""
    curves = {"first_move_accuracy": accuracy_curve(record["per_level"])}
    if record.get("seen_per_level"):
        curves["seen_board_accuracy"] = accuracy_curve(record["seen_per_level"])
    return record | curves


def accuracy_curve(per_level: dict[str, dict[str, list[float]]]) -> list[dict]:
    """Per count of training boards (those every seed reached), the accuracy over seeds x levels with its
    95% interval (bootstrap over seeds, then levels)."""
    counts = sorted(set.intersection(*(set(map(int, run)) for run in per_level.values())))
    return [{"boards": count, **hierarchical_bootstrap_ci(np.array([run[str(count)] for run in per_level.values()])
                                                          ).as_dict()} for count in counts]


def combine(paths: list[Path], out: Path) -> None:
    """One record from several invocations' (e.g. one seed each, run side by side): their seeds' per-level
    accuracies pooled into one curve; the rest (settings, references, policies) from the first, whose
    settings every other must share."""
    records = [json.loads(path.read_text()) for path in paths]
    settings = ("overrides", "eval_levels", "first_eval_level", "lr", "batch", "bf16", "examples", "epochs",
                "fit_levels")
    for path, record in zip(paths[1:], records[1:], strict=True):
        if differing := [key for key in settings if record.get(key) != records[0].get(key)]:
            raise SystemExit(f"{path} differs from {paths[0]} in {differing}: only runs of one setting combine")
    pooled = {key: {seed: run for record in records for seed, run in record.get(key, {}).items()}
              for key in ("per_level", "seen_per_level", "train_nll", "policies")}
    write(with_curves(records[0] | pooled | {"seeds": sorted(map(int, pooled["per_level"])),
                                             "minutes": [record["minutes"] for record in records]}), out)


def write(record: dict, out: Path) -> None:
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({key: value for key, value in record.items() if key not in ("per_level", "seen_per_level")},
                     indent=1))


if __name__ == "__main__":
    main()
