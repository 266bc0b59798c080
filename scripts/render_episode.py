"""Render one episode of a policy: a GIF and a PNG strip of the board, and an HTML page that shows each
turn (the observation, the model's think/answer, the reward) beside the picture of the board.

    python scripts/render_episode.py --checkpoint runs/compare/sokoban/DrGRPO-Soft-seed0 --seed 123 --out ep/
    python scripts/render_episode.py --model embedded --env frozenlake --seed 7 --out ep/

The policy plays level ``--seed`` (member 0) through the rollout engine, exactly as in training or
evaluation; its replies are then replayed action by action on a fresh env of the same level and
member (same dice), which yields a frame per action. The replay must reproduce the episode's success
and reward, else the script stops with an error.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import envs
from agents.backends import SamplingParams
from agents.config import AgentProxyConfig
from agents.rollout import act
from algos.training.policy import add_policy_arguments, load_eval_policy, policy_engine
from envs.rendering import save_episode

_RENDER_STREAM = 3  # sampling stream distinct from training (0), validation (1) and evaluation (2)


@dataclass
class Turn:
    """One turn: what the model saw and wrote, the actions it took, and the board after each."""

    observation: str
    reply: str
    think: str
    actions: list[str]
    format_ok: bool
    env_reward: float = 0.0
    frames: list[np.ndarray] = field(default_factory=list)


def replay(env_name: str, env_kwargs: dict, seed: int, messages: list[dict[str, str]], proxy: AgentProxyConfig,
           max_actions_per_traj: int) -> tuple[np.ndarray, list[Turn], bool]:
    """Play the assistant replies of ``messages`` again on level ``seed``: (first frame, turns, success).

    Each reply runs through the rollout engine's own turn rule (``agents.rollout.act``); the episode's
    budget of ``max_actions_per_traj`` actions carries over from turn to turn, and it ends when the env does.
    """
    env = envs.make(env_name, **env_kwargs, render_mode="rgb_array")
    env.reset(seed=seed, options={"member": 0})
    first_frame = env.render()
    observations = [m["content"] for m in messages if m["role"] == "user"]
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    turns, actions_left, success, frames = [], max_actions_per_traj, False, []
    for observation, reply in zip(observations, replies, strict=False):
        first = len(frames)
        outcome = act(env, reply, proxy, actions_left, on_step=lambda played: frames.append(played.render()))
        turns.append(Turn(observation, reply, outcome.think, [env.action_names[a] for a in outcome.actions],
                          not outcome.bad_format, outcome.env_reward, frames[first:]))
        actions_left -= outcome.executed
        success = outcome.success if outcome.executed else success
        if outcome.env_done:
            break
    return first_frame, turns, success


def png_data_uri(frame: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def html_page(title: str, summary: str, first_frame: np.ndarray, turns: list[Turn], format_penalty: float) -> str:
    """A self-contained page (pictures inlined): one row per turn, board on the left, text on the right."""
    rows = []
    board = first_frame
    for index, turn in enumerate(turns, start=1):
        after = turn.frames[-1] if turn.frames else board
        penalty = 0.0 if turn.format_ok else format_penalty
        rows.append(f"""
<tr><td class="pic"><div>before</div><img src="{png_data_uri(board)}"><div>after</div>
<img src="{png_data_uri(after)}"></td>
<td><h3>Turn {index}</h3>
<h4>Observation</h4><pre>{html.escape(turn.observation)}</pre>
<h4>Think</h4><pre>{html.escape(turn.think) or '<i>(none parsed)</i>'}</pre>
<h4>Answer</h4><p>actions: <b>{html.escape(' || '.join(turn.actions)) or '(no valid action)'}</b>
{'' if turn.format_ok else f' &mdash; format error, penalty {penalty:+g}'}</p>
<details><summary>raw reply</summary><pre>{html.escape(turn.reply)}</pre></details>
<p>reward: env {turn.env_reward:+g}, turn total {turn.env_reward + penalty:+g}</p></td></tr>""")
        board = after
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body {{ font-family: sans-serif; margin: 2em; }} td {{ vertical-align: top; padding: 0.6em; border-top: 1px solid #ccc; }}
td.pic img {{ image-rendering: pixelated; width: 192px; }} pre {{ white-space: pre-wrap; background: #f6f6f6; padding: 0.5em; }}
</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>
<table>{''.join(rows)}</table></body></html>
"""


def render_episode(policy, env: str, seed: int, out: Path, temperature: float = 0.0, sampling_seed: int = 0) -> dict:
    """Play level ``seed`` of ``env`` with ``policy``; write episode.gif/.png/.html/.json under ``out``."""
    engine, config = policy_engine(policy, env)
    params = SamplingParams(temperature=temperature, max_new_tokens=config.actor_rollout_ref.rollout.response_length,
                            seed=sampling_seed)
    batch = engine.play([seed], 1, params, (_RENDER_STREAM,), f"{env} seed {seed}")
    first_frame, turns, success = replay(env, config.env.kwargs, seed, batch.turns[0], config.agent_proxy,
                                         engine.max_actions_per_traj)
    format_penalty = config.es_manager.format_penalty
    reward = sum(t.env_reward + (0.0 if t.format_ok else format_penalty) for t in turns)
    episode_reward = float(batch.episode_reward[0])
    if success != bool(batch.success[0]) or not np.isclose(reward, episode_reward, atol=1e-5):
        raise RuntimeError(f"replay diverged from the episode: success {success} vs {bool(batch.success[0])}, "
                           f"reward {reward} vs {episode_reward}")
    frames = [first_frame] + [frame for turn in turns for frame in turn.frames]
    out.mkdir(parents=True, exist_ok=True)
    save_episode(frames, out / "episode.gif")
    save_episode(frames, out / "episode.png")
    mode = "greedy" if temperature == 0 else f"temperature {temperature}, sampling seed {sampling_seed}"
    summary = (f"{policy.description} | {env} level {seed} | {mode} | {len(turns)} turns, "
               f"{len(frames) - 1} actions | reward {episode_reward:+g} | success {success}")
    (out / "episode.html").write_text(html_page(f"{env} seed {seed}", summary, first_frame, turns,
                                                format_penalty))
    record = {"policy": policy.description, "env": env, "seed": seed, "temperature": temperature,
              "success": success, "reward": episode_reward, "num_turns": len(turns), "num_frames": len(frames),
              "turns": [{"observation": t.observation, "reply": t.reply, "actions": t.actions,
                         "actions_executed": len(t.frames), "format_ok": t.format_ok, "env_reward": t.env_reward} for t in turns]}
    (out / "episode.json").write_text(json.dumps(record, indent=2))
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_policy_arguments(parser)
    parser.add_argument("--env", help="bandit | sokoban | frozenlake (default: the run's env, else sokoban)")
    parser.add_argument("--seed", type=int, default=123, help="level seed (default 123, the first held-out level)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--sampling-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    try:
        policy = load_eval_policy(args.checkpoint, args.model, args.override)
        env = args.env or policy.trained_env or "sokoban"
        record = render_episode(policy, env, args.seed, args.out, args.temperature, args.sampling_seed)
    except ValueError as error:
        parser.error(str(error))
    print(f"{record['num_turns']} turns, reward {record['reward']:+g}, success {record['success']}")
    print(f"written: {args.out / 'episode.html'} (+ episode.gif, episode.png, episode.json)")


if __name__ == "__main__":
    main()
