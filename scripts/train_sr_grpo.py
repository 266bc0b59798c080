"""SR-GRPO on GSM8K with TRL: the SR-GRPO seed's example, on ``SRGRPOTrainer``.

    python scripts/train_sr_grpo.py                        # embedded SmolLM2-135M, a few CPU steps
    python scripts/train_sr_grpo.py --model HuggingFaceTB/SmolLM2-360M-Instruct --steps 500 --tau 0.3

Defaults are the seed's: ``num_generations=8``, ``beta=0.1``, ``max_prompt_length=256``,
``max_completion_length=512``, ``tau=0.5``; vLLM only with ``--use-vllm`` on a GPU. TRL >= 1.0 has no
``max_prompt_length`` option any more, so prompts longer than it are dropped from the data set here
(cutting a word problem would make it unanswerable). Needs ``pip install 'turnrl[trl]'``.

The same algorithm through TurnRL's own trainer: ``python scripts/train.py env=gsm8k algo=sr_grpo``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedTokenizerBase

from agents.model import load_tokenizer, resolve_model_location
from envs.gsm8k import chat_messages, make_reward_funcs
from envs.gsm8k_answers import ANSWER_MODES, format_number, reference_answer
from envs.gsm8k_data import SOURCES, load_gsm8k

if TYPE_CHECKING:
    import datasets

CPU_STEPS, GPU_STEPS = 3, 500


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="HF folder or hub name; default: the embedded SmolLM2-135M")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"optimizer steps (default {CPU_STEPS} on CPU, {GPU_STEPS} on a GPU)")
    parser.add_argument("--tau", type=float, default=0.5, help="SR-GRPO softmax temperature (> 0)")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/sr_grpo_gsm8k"))
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--prompts-per-step", type=int, default=1, help="GSM8K questions per optimizer step")
    parser.add_argument("--beta", type=float, default=0.1, help="KL coefficient to the reference model")
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--max-prompt-length", type=int, default=256)
    parser.add_argument("--max-completion-length", type=int, default=512)
    parser.add_argument("--source", choices=SOURCES, default="auto", help="GSM8K from the hub or generated")
    parser.add_argument("--answer-mode", choices=ANSWER_MODES, default="answer_tag")
    parser.add_argument("--format-reward", type=float, default=0.0, help="extra reward for <answer>N</answer>")
    parser.add_argument("--use-vllm", action="store_true", help="generate with vLLM (GPU only)")
    parser.add_argument("--report-to", default="none", help="TRL/transformers loggers, e.g. wandb")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("num_generations", "prompts_per_step", "max_prompt_length", "max_completion_length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)} is invalid; allowed: an int >= 1")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps={args.steps} is invalid; allowed: an int >= 1")
    if args.use_vllm and not torch.cuda.is_available():
        parser.error("--use-vllm needs a CUDA GPU; leave it off on CPU")
    return args


def gsm8k_prompt_dataset(
    tokenizer: PreTrainedTokenizerBase, source: str, max_prompt_length: int
) -> datasets.Dataset:
    """``datasets.Dataset`` of chat prompts and ``reference`` numbers; prompts over the limit dropped."""
    import datasets

    rows = []
    for record in load_gsm8k("train", source):
        messages = chat_messages(record["question"])
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= max_prompt_length:
            rows.append({"prompt": messages, "reference": format_number(reference_answer(record["answer"]))})
    if not rows:
        raise ValueError(f"--max-prompt-length={max_prompt_length} drops every GSM8K prompt; raise it")
    print(f"GSM8K train: {len(rows)} prompts of <= {max_prompt_length} tokens")
    return datasets.Dataset.from_list(rows)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from algos.integrations.trl_sr_grpo import SRGRPOConfig, SRGRPOTrainer  # needs the trl extra

    on_gpu = torch.cuda.is_available()
    model_location = resolve_model_location(args.model)  # TRL loads the policy and its reference from here
    tokenizer = load_tokenizer(model_location)
    config = SRGRPOConfig(
        output_dir=str(args.output_dir),
        tau=args.tau,
        num_generations=args.num_generations,
        per_device_train_batch_size=args.num_generations * args.prompts_per_step,
        beta=args.beta,
        max_completion_length=args.max_completion_length,
        learning_rate=args.learning_rate,
        max_steps=args.steps or (GPU_STEPS if on_gpu else CPU_STEPS),
        use_vllm=args.use_vllm,
        use_cpu=not on_gpu,
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        logging_steps=1,
        save_strategy="no",
        report_to=args.report_to,
        seed=args.seed,
    )
    trainer = SRGRPOTrainer(
        model=model_location,
        reward_funcs=make_reward_funcs(args.answer_mode, args.format_reward),
        args=config,
        train_dataset=gsm8k_prompt_dataset(tokenizer, args.source, args.max_prompt_length),
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(str(args.output_dir))
    tokenizer.save_pretrained(str(args.output_dir))
    print(f"saved the trained model to {args.output_dir}; evaluate it with "
          f"`python scripts/eval_gsm8k.py --model {args.output_dir}`")


if __name__ == "__main__":
    main()
