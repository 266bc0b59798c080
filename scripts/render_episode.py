"""Render one episode of a policy: a GIF and a PNG strip of the board, and an HTML page that shows each
turn (the observation, the model's think/answer, the reward) beside the picture of the board, a legend of
the picture, and a token view of each reply: tokens coloured by loss mask, with the trainer's log-prob and
the token's advantage on hover.

    python scripts/render_episode.py --checkpoint runs/compare/sokoban/DrGRPO-Soft-seed0 --seed 123 --out ep/
    python scripts/render_episode.py --model embedded --env frozenlake --seed 7 --out ep/

The policy plays level ``--seed`` (member 0) through the rollout engine, exactly as in training or
evaluation; its replies are then replayed action by action on a fresh env of the same level and
member (same dice, ``agents.replay``), which yields a frame per action. The replay must reproduce the episode's success
and reward, else the script stops with an error.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import envs
from agents.backends import SamplingParams
from agents.replay import ReplayedTurn, replay
from agents.rollout import RolloutBatch
from algos import compute_advantages
from algos.training.packed_logprobs import response_log_probs
from algos.training.policy import add_policy_arguments, load_eval_policy, policy_engine
from algos.training.schema import advantage_options
from envs.rendering import draw_grid, save_episode

_RENDER_STREAM = 3  # sampling stream distinct from training (0), validation (1) and evaluation (2)
CONTEXT_TOKENS = 4  # prompt tokens shown before each reply (the prefilled <think> and the chat template)
GENERATED_COLOUR, CONTEXT_COLOUR = "#9be09b", "#d9d9d9"  # token backgrounds: loss mask 1 / 0


@dataclass
class Token:
    """One token of the token view: its text, loss mask, the trainer's log-prob (generated tokens only)
    and the advantage the update gives it (the episode's advantage where the loss mask is 1, else 0)."""

    text: str
    loss_mask: int
    logprob: float | None
    advantage: float


@torch.no_grad()
def token_view(model: torch.nn.Module, tokenizer, batch: RolloutBatch, b: int, temperature: float,
               advantage: float) -> list[list[Token]]:
    """Per turn, the last ``CONTEXT_TOKENS`` prompt tokens and the reply's generated tokens of episode ``b``,
    with ``log pi(token | prefix)`` at ``temperature`` as the trainer computes it (``response_log_probs``)."""
    length = int(batch.attention_mask[b].sum())
    ids, mask = batch.input_ids[b : b + 1, :length], batch.loss_mask[b : b + 1, :length]
    logp, _ = response_log_probs(model, ids, torch.ones_like(ids), mask[:, 1:], temperature)
    flags = mask[0].tolist()
    starts = [t for t in range(length) if flags[t] and (t == 0 or not flags[t - 1])]
    turns = []
    for start in starts:
        end = start
        while end < length and flags[end]:
            end += 1
        turns.append([Token(tokenizer.decode([int(ids[0, t])]), flags[t],
                            float(logp[0, t - 1]) if flags[t] else None, advantage if flags[t] else 0.0)
                      for t in range(max(0, start - CONTEXT_TOKENS), end)])
    return turns


def png_data_uri(frame: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def token_html(tokens: list[Token]) -> str:
    """Spans coloured by loss mask; the title (hover) gives the id-free details."""
    spans = []
    for token in tokens:
        title = f"{token.text!r} | loss mask {token.loss_mask}"
        if token.logprob is not None:
            title += f" | log-prob {token.logprob:.3f} | advantage {token.advantage:+.3f}"
        kind = "gen" if token.loss_mask else "ctx"
        text = html.escape(token.text).replace("\n", "↵<br>")
        spans.append(f'<span class="tok {kind}" title="{html.escape(title)}">{text}</span>')
    return "".join(spans)


def legend_html(env_name: str) -> str:
    """The board picture's symbols as small tiles with their meaning, and the token colours."""
    env_class = type(envs.make(env_name).unwrapped)
    items = [f'<span class="item"><img src="{png_data_uri(draw_grid([[symbol]], env_class.palette, 24))}">'
             f"{html.escape(meaning)}</span>" for symbol, meaning in env_class.board_legend.items()]
    tokens = ('<span class="item"><span class="tok gen">generated</span> loss mask 1 (trained)</span>'
              '<span class="item"><span class="tok ctx">prompt</span> loss mask 0</span>')
    return f'<div id="legend"><b>Board:</b> {"".join(items)}<br><b>Tokens:</b> {tokens} (hover a token)</div>'


def html_page(title: str, summary: str, env_name: str, first_frame: np.ndarray, turns: list[ReplayedTurn],
              tokens: list[list[Token]]) -> str:
    """A self-contained page (pictures inlined): a legend, then one row per turn, board on the left, text
    and the token view on the right."""
    rows = []
    board = first_frame
    for index, turn in enumerate(turns, start=1):
        after = turn.frames[-1] if turn.frames else board
        penalty = turn.reward - turn.env_reward
        view = token_html(tokens[index - 1]) if index <= len(tokens) else ""
        rows.append(f"""
<tr><td class="pic"><div>before</div><img src="{png_data_uri(board)}"><div>after</div>
<img src="{png_data_uri(after)}"></td>
<td><h3>Turn {index}</h3>
<h4>Observation</h4><pre>{html.escape(turn.observation)}</pre>
<h4>Think</h4><pre>{html.escape(turn.think) or '<i>(none parsed)</i>'}</pre>
<h4>Answer</h4><p>actions: <b>{html.escape(' || '.join(turn.actions)) or '(no valid action)'}</b>
{'' if turn.format_ok else f' &mdash; format error, penalty {penalty:+g}'}</p>
<h4>Tokens</h4><div class="tokens">{view}</div>
<p>reward: env {turn.env_reward:+g}, turn total {turn.reward:+g}</p></td></tr>""")
        board = after
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body {{ font-family: sans-serif; margin: 2em; }} td {{ vertical-align: top; padding: 0.6em; border-top: 1px solid #ccc; }}
td.pic img {{ image-rendering: pixelated; width: 192px; }} pre {{ white-space: pre-wrap; background: #f6f6f6; padding: 0.5em; }}
.tok {{ font-family: monospace; padding: 1px 0; border-right: 1px solid #fff; white-space: pre-wrap; }}
.tok.gen {{ background: {GENERATED_COLOUR}; }} .tok.ctx {{ background: {CONTEXT_COLOUR}; }}
#legend {{ line-height: 2.2em; }} #legend .item {{ margin-right: 1.2em; }}
#legend img {{ vertical-align: middle; margin-right: 0.3em; image-rendering: pixelated; }}
</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>
{legend_html(env_name)}
<table>{''.join(rows)}</table></body></html>
"""


def render_episode(policy, env: str, seed: int, out: Path, temperature: float = 0.0, sampling_seed: int = 0,
                   group_size: int = 1) -> dict:
    """Play level ``seed`` of ``env`` with ``policy`` (``group_size`` members, the advantages of the run's
    estimator over them); write member 0 as episode.gif/.png/.html/.json under ``out``."""
    if group_size < 1:
        raise ValueError(f"group_size={group_size} is invalid; allowed: an int >= 1")
    engine, config = policy_engine(policy, env)
    params = SamplingParams(temperature=temperature, max_new_tokens=config.actor_rollout_ref.rollout.response_length,
                            seed=sampling_seed)
    batch = engine.play([seed], group_size, params, (_RENDER_STREAM,), f"{env} seed {seed}")
    episode = replay(env, config.env.kwargs, seed, 0, batch.turns[0], config.agent_proxy, engine.max_actions_per_traj,
                     config.es_manager.format_penalty, render=True)
    episode_reward = float(batch.episode_reward[0])
    if episode.success != bool(batch.success[0]) or not np.isclose(episode.reward, episode_reward, atol=1e-5):
        raise RuntimeError(f"replay diverged from the episode: success {episode.success} vs {bool(batch.success[0])}, "
                           f"reward {episode.reward} vs {episode_reward}")
    advantages, _ = compute_advantages(batch.episode_reward.view(1, -1), **advantage_options(config))
    tokens = token_view(policy.model, policy.tokenizer, batch, 0, config.actor_rollout_ref.rollout.temperature,
                        float(advantages[0, 0]))
    turns = episode.turns
    frames = [episode.first_frame] + [frame for turn in turns for frame in turn.frames]
    out.mkdir(parents=True, exist_ok=True)
    save_episode(frames, out / "episode.gif")
    save_episode(frames, out / "episode.png")
    mode = "greedy" if temperature == 0 else f"temperature {temperature}, sampling seed {sampling_seed}"
    summary = (f"{policy.description} | {env} level {seed} | {mode} | {len(turns)} turns, "
               f"{len(frames) - 1} actions | reward {episode_reward:+g} | success {episode.success} | "
               f"advantage {float(advantages[0, 0]):+.3f} ({config.algorithm.adv_estimator}, group of {group_size})")
    (out / "episode.html").write_text(html_page(f"{env} seed {seed}", summary, env, episode.first_frame, turns,
                                                tokens))
    record = {"policy": policy.description, "env": env, "seed": seed, "temperature": temperature,
              "success": episode.success, "reward": episode_reward, "advantage": float(advantages[0, 0]),
              "num_turns": len(turns), "num_frames": len(frames),
              "turns": [{"observation": t.observation, "reply": t.reply, "actions": t.actions,
                         "actions_executed": len(t.frames), "format_ok": t.format_ok, "env_reward": t.env_reward,
                         "tokens": [vars(token) for token in tokens[i]] if i < len(tokens) else []}
                        for i, t in enumerate(turns)]}
    (out / "episode.json").write_text(json.dumps(record, indent=2))
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_policy_arguments(parser)
    parser.add_argument("--env", help="bandit | sokoban | frozenlake (default: the run's env, else sokoban)")
    parser.add_argument("--seed", type=int, default=123, help="level seed (default 123, the first held-out level)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--sampling-seed", type=int, default=0)
    parser.add_argument("--group-size", type=int, default=1,
                        help="episodes played on the level; the shown one's advantage is over them (default 1: A = r)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    try:
        policy = load_eval_policy(args.checkpoint, args.model, args.override)
        env = args.env or policy.trained_env or "sokoban"
        record = render_episode(policy, env, args.seed, args.out, args.temperature, args.sampling_seed,
                                args.group_size)
    except ValueError as error:
        parser.error(str(error))
    print(f"{record['num_turns']} turns, reward {record['reward']:+g}, success {record['success']}")
    print(f"written: {args.out / 'episode.html'} (+ episode.gif, episode.png, episode.json)")


if __name__ == "__main__":
    main()
