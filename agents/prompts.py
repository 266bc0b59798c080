"""RAGEN's multi-turn prompt, as chat messages and as exact token ids.

Conversation of one episode (RAGEN's es_manager/ctx_manager layout, so results compare):

    system:    "You're a helpful assistant."
    user:      env instructions + action names + "up to N actions separated by ||"
               + "Turn 1:\\nState:\\n<obs>\\nYou have k actions left. Always output: ..."
    assistant: "<think>...</think><answer>...</answer>"   (generation is prefilled with <think>)
    user:      "Reward:\\n<r>\\n" + "Turn 2:\\nState:\\n..."
    ...

Token ids are built incrementally (token-in, token-out): the prompt is the chat template of the
first two messages; each later env message is the template *delta* that follows an assistant reply,
tokenized on its own and appended to the ids the model generated. Model output is never decoded and
re-tokenized.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from agents.parsing import ACTION_SEPARATOR

SYSTEM_PROMPT = "You're a helpful assistant."
_REPLY_SENTINEL = "\u0001TURNRL-REPLY\u0001"


def prefill_text(enable_think: bool) -> str:
    """Text the assistant turn starts with; it is part of the prompt, not of the model's output."""
    return "<think>" if enable_think else "<answer>"


def format_instruction(enable_think: bool) -> str:
    """The reply format every turn message restates."""
    if enable_think:
        return "<think> [Your thoughts] </think> <answer> [your answer] </answer>"
    return "<answer> [your answer] </answer>"


def intro_message(instructions: str, action_names: Sequence[str], max_actions_per_turn: int) -> str:
    """Opening of the first user message: the env's rules and how to write actions."""
    if not action_names:  # a free-form answer (GSM8K): no action list, no separator
        return f"{instructions}\n"
    return (
        f"{instructions}\n"
        f"Your available actions are:\n{', '.join(action_names)}\n"
        f'You can make up to {max_actions_per_turn} actions, separated by the action separator " '
        f'{ACTION_SEPARATOR} "\n'
    )


def turn_message(turn: int, state: str, actions_left: int, enable_think: bool, max_new_tokens: int) -> str:
    """The env's part of turn ``turn`` (1-based): current state, budget and format reminder."""
    return (
        f"\nTurn {turn}:\nState:\n{state}\nYou have {actions_left} actions left. "
        f"Always output: {format_instruction(enable_think)} with no extra text. Strictly follow this format. "
        f"Max response length: {max_new_tokens} words (tokens).\n"
    )


def reward_message(reward: float) -> str:
    """Feedback after a turn: the env reward of that turn (format penalties are not shown)."""
    return f"Reward:\n{round(reward, 4):g}\n"


class ChatTokenizer:
    """Renders messages with the tokenizer's chat template into token ids, incrementally.

    ``prompt_ids`` tokenizes the opening messages plus the generation prompt and prefill;
    ``env_turn_ids`` tokenizes only what the template puts between the end of an assistant reply
    and the next prefill (closing the reply, the new user message, the generation prompt).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids(tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prompt_ids(self, messages: list[dict[str, str]], prefill: str) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.encode(text + prefill)

    def env_turn_text(self, user_content: str, prefill: str, reply_ended_with_eos: bool) -> str:
        """Template text after an assistant reply, up to and including the next prefill."""
        context = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "-"},
            {"role": "assistant", "content": _REPLY_SENTINEL},
            {"role": "user", "content": user_content},
        ]
        text = self.tokenizer.apply_chat_template(context, tokenize=False, add_generation_prompt=True)
        delta = text[text.rindex(_REPLY_SENTINEL) + len(_REPLY_SENTINEL) :]
        eos_text = self.tokenizer.eos_token or ""
        if reply_ended_with_eos and eos_text and delta.startswith(eos_text):
            delta = delta[len(eos_text) :]
        return delta + prefill

    def env_turn_ids(self, user_content: str, prefill: str, reply_ended_with_eos: bool) -> list[int]:
        return self.encode(self.env_turn_text(user_content, prefill, reply_ended_with_eos))


def eos_token_ids(
    tokenizer: PreTrainedTokenizerBase, generation_eos: int | Sequence[int] | None = None
) -> frozenset[int]:
    """End-of-sequence ids = the tokenizer's ``eos_token_id`` united with ``generation_eos`` (a model's
    ``generation_config.eos_token_id``: an int, a list or None). The backends stop at this set; the chat
    template, which writes the tokenizer's own EOS, uses it without ``generation_eos``."""
    ids: set[int | None] = set()
    for value in (tokenizer.eos_token_id, generation_eos):
        ids.update([value] if value is None or isinstance(value, int) else value)
    return frozenset(ids - {None})


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The tokenizer's pad id, else its smallest end-of-sequence id (padding is always masked out)."""
    pad = tokenizer.pad_token_id
    return pad if pad is not None else min(eos_token_ids(tokenizer), default=0)
