"""Compare runs: learning curves (mean over seeds, 95% bootstrap CI bands), a final table with n and 95%
CIs, and rliable's IQM and probability of improvement across runs; PNG + Markdown + JSON.

    python scripts/plot_compare.py 'runs/compare/bandit/*' --out runs/compare/bandit/summary
    python scripts/plot_compare.py 'multirun/2026-01-01/12-00-00/*' --out cmp   # a Hydra multirun's jobs

Each run dir holds a ``metrics.jsonl`` (one ``{"step": k, ...}`` row per step, as the trainer writes).
Runs are grouped by name: a dir ``<label>-seed<s>`` belongs to ``<label>`` (the compare script's
layout, and a multirun's ``<algo>-seed<seed>`` sub-dirs); any other dir is its own label. At every
step, a label's curve is the mean over the seeds that logged that step, its band the 95% percentile
bootstrap interval of that mean over seeds (``algos.statistics.bootstrap_ci``; one seed: no band).
Panels: train success rate and reward (the step's rollout episodes) and validation success rate
(held-out levels, at ``trainer.test_freq`` steps). The "final" value of a seed is its mean over its
last ``--last`` logged steps; the table gives, per label, n seeds and the mean of the finals with its
95% bootstrap CI, then rliable's interquartile mean (IQM) of the headline metric across seeds and the
probability that a seed of one label beats a seed of another (``algos.statistics.aggregate_across_runs``).

Where the runs recorded every validation episode (``validation.jsonl``), a second table uses them all:
per label, validation success at its first and last validation step over seeds x levels, with a 95%
interval from a bootstrap over seeds and then levels (``hierarchical_bootstrap_ci``), and the paired
change between them: with few seeds, the levels carry most of the information.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from algos.statistics import aggregate_across_runs, bootstrap_ci, hierarchical_bootstrap_ci
from algos.training.tracking import METRICS_FILE, read_metrics, validation_scores

SEED_SUFFIX = re.compile(r"^(?P<label>.+)-seed(?P<seed>\d+)$")
CURVES = (("rollout/success_rate", "train success rate"), ("reward", "train episode reward"),
          ("val/success_rate", "val success rate (held-out levels)"))
TABLE_COLUMNS = CURVES
HEADLINE = ("val/success_rate", "rollout/success_rate")  # the IQM's metric: the first every label has
RESAMPLES = 2_000


@dataclass
class Curve:
    """One label's metric over steps: the steps, and mean / std / 95% CI of the mean / seed count at each."""

    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    low: np.ndarray
    high: np.ndarray
    count: np.ndarray


def group_runs(run_dirs: list[Path]) -> dict[str, list[Path]]:
    """Run dirs with a ``metrics.jsonl``, by label (``<label>-seed<s>`` -> ``<label>``), sorted."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for run_dir in sorted(run_dirs):
        if (run_dir / METRICS_FILE).is_file():
            match = SEED_SUFFIX.match(run_dir.name)
            groups[match["label"] if match else run_dir.name].append(run_dir)
    return dict(groups)


def series(rows: list[dict], key: str) -> dict[int, float]:
    """``{step: value}`` of ``key`` over the rows that have a finite value for it."""
    return {int(row["step"]): float(row[key]) for row in rows
            if key in row and isinstance(row[key], (int, float)) and math.isfinite(row[key])}


def seed_curve(runs: list[list[dict]], key: str) -> Curve:
    """Mean, std and 95% bootstrap CI over runs at each step that at least one run logged."""
    per_run = [series(rows, key) for rows in runs]
    steps = sorted(set().union(*per_run)) if per_run else []
    values = [[run[step] for run in per_run if step in run] for step in steps]
    intervals = [bootstrap_ci(np.array(v), resamples=RESAMPLES) for v in values]
    return Curve(
        steps=np.array(steps, dtype=int),
        mean=np.array([np.mean(v) for v in values]),
        std=np.array([np.std(v) for v in values]),
        low=np.array([i.low for i in intervals]),
        high=np.array([i.high for i in intervals]),
        count=np.array([len(v) for v in values], dtype=int),
    )


def final_values(runs: list[list[dict]], key: str, last: int) -> list[float]:
    """Each run's mean of ``key`` over its last ``last`` logged steps (runs without it are skipped)."""
    finals = []
    for rows in runs:
        values = list(series(rows, key).values())
        if values:
            finals.append(float(np.mean(values[-last:])))
    return finals


def plot(curves: dict[str, dict[str, Curve]], path: Path, title: str) -> Path:
    """One panel per metric of ``CURVES``; per label the mean over seeds and its 95% CI band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(CURVES), figsize=(6 * len(CURVES), 4.2), squeeze=False)
    for axis, (key, label) in zip(axes[0], CURVES, strict=True):
        for name, by_key in curves.items():
            curve = by_key[key]
            if len(curve.steps) == 0:
                continue
            (line,) = axis.plot(curve.steps, curve.mean, label=name, linewidth=1.6)
            axis.fill_between(curve.steps, curve.low, curve.high, color=line.get_color(), alpha=0.2, linewidth=0)
        axis.set_xlabel("training step")
        axis.set_ylabel(label)
        axis.set_title(f"{label}: mean over seeds, 95% CI", fontsize=9)
        axis.grid(alpha=0.3)
    seeds = {name: max((int(c.count.max()) for c in by_key.values() if len(c.count)), default=0)
             for name, by_key in curves.items()}
    handles, names = axes[0][0].get_legend_handles_labels()
    axes[0][0].legend(handles, [f"{name} (n={seeds[name]} seeds)" for name in names], fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def format_interval(values: list[float]) -> str:
    """``mean [low, high] (n=k)``: the mean over seeds and its 95% percentile bootstrap interval."""
    return str(bootstrap_ci(np.array(values), resamples=RESAMPLES)) if values else "–"


def markdown_table(runs: dict[str, list[list[dict]]], last: int) -> str:
    """One row per label: seeds, steps reached, final value (mean over seeds [95% CI]) of each column."""
    header = ["run", "seeds", "steps", *(f"{label}, mean of last {last} steps [95% CI over seeds]"
                                         for _, label in TABLE_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, label_runs in runs.items():
        steps = max((int(rows[-1]["step"]) for rows in label_runs if rows), default=0)
        cells = [name, str(len(label_runs)), str(steps)]
        cells += [format_interval(final_values(label_runs, key, last)) for key, _ in TABLE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def across_runs(runs: dict[str, list[list[dict]]], last: int) -> tuple[str | None, dict]:
    """rliable's IQM [95% CI] and probability of improvement of the headline metric, seeds as runs."""
    for key in HEADLINE:
        finals = {name: final_values(label_runs, key, last) for name, label_runs in runs.items()}
        if all(finals.values()):
            scores = {name: np.array(values).reshape(-1, 1) for name, values in finals.items()}
            return key, aggregate_across_runs(scores, resamples=RESAMPLES)
    return None, {}


def aggregate_markdown(key: str | None, aggregate: dict, last: int) -> str:
    if key is None:
        return ""
    lines = [f"\n{key}, mean of the last {last} steps per seed, across seeds (rliable, stratified bootstrap):\n",
             "| run | n | IQM [95% CI] | " + " | ".join(f"P(beats {b})" for b in aggregate["methods"]) + " |",
             "|" + "---|" * (3 + len(aggregate["methods"]))]
    for name, values in aggregate["methods"].items():
        iqm = values["iqm"]
        beats = [aggregate["probability_of_improvement"].get(name, {}).get(other) for other in aggregate["methods"]]
        cells = [f"{b['estimate']:.2f} [{b['low']:.2f}, {b['high']:.2f}]" if b else "–" for b in beats]
        lines.append(f"| {name} | {iqm['n']} | {iqm['estimate']:.3f} [{iqm['low']:.3f}, {iqm['high']:.3f}] | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def level_scores(groups: dict[str, list[Path]]) -> dict[str, dict[int, np.ndarray]]:
    """``{label: {step: [seeds, levels] success}}`` at the steps every seed of the label validated, from
    ``validation.jsonl`` (labels without one for every seed are left out; levels cut to the fewest)."""
    scores = {}
    for name, dirs in groups.items():
        runs = [validation_scores(run_dir) for run_dir in dirs]
        steps = sorted(set.intersection(*(set(run) for run in runs))) if all(runs) else []
        widths = {step: min(len(run[step]) for run in runs) for step in steps}
        if steps:
            scores[name] = {step: np.stack([run[step][:width] for run in runs]) for step, width in widths.items()}
    return scores


def level_markdown(scores: dict[str, dict[int, np.ndarray]]) -> tuple[str, dict]:
    """``(markdown, numbers)``: per label, validation success at its first and last validation step over
    seeds x levels and the change between them (the same seeds and levels, so a paired difference), each
    with a hierarchical 95% bootstrap interval (seeds, then levels)."""
    if not scores:
        return "", {}
    numbers = {}
    lines = ["\nValidation success per episode, seeds x held-out levels (95% CI: bootstrap over seeds, then levels;"
             " the change is the paired difference, last minus first, on the same seeds and levels):\n",
             "| run | seeds x levels | first step | success [95% CI] | last step | success [95% CI] | change [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    for name, by_step in scores.items():
        first, final = min(by_step), max(by_step)
        width = min(by_step[first].shape[1], by_step[final].shape[1])
        numbers[name] = {str(first): hierarchical_bootstrap_ci(by_step[first], resamples=RESAMPLES).as_dict(),
                         str(final): hierarchical_bootstrap_ci(by_step[final], resamples=RESAMPLES).as_dict(),
                         "change": hierarchical_bootstrap_ci(by_step[final][:, :width] - by_step[first][:, :width],
                                                             resamples=RESAMPLES).as_dict()}
        shape = "x".join(map(str, by_step[final].shape))
        lines.append(f"| {name} | {shape} | {first} | {interval_text(numbers[name][str(first)])} | {final} | "
                     f"{interval_text(numbers[name][str(final)])} | {interval_text(numbers[name]['change'])} |")
    return "\n".join(lines) + "\n", numbers


def interval_text(interval: dict) -> str:
    return f"{interval['estimate']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"


def compare(run_dirs: list[Path], out: Path, last: int = 5, title: str = "") -> dict:
    """Write ``<out>.png`` (curves), ``<out>.md`` (tables) and ``<out>.json`` (the numbers, and rliable's
    ``across_runs``); return the numbers per label."""
    if last < 1:
        raise ValueError(f"last={last} is invalid; allowed: an int >= 1")
    groups = group_runs(run_dirs)
    if not groups:
        raise ValueError(f"none of the {len(run_dirs)} paths is a run dir with a {METRICS_FILE}")
    runs = {name: [read_metrics(run_dir / METRICS_FILE) for run_dir in dirs] for name, dirs in groups.items()}
    curves = {name: {key: seed_curve(label_runs, key) for key, _ in CURVES} for name, label_runs in runs.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    png = plot(curves, out.with_suffix(".png"), title or out.stem)
    key, aggregate = across_runs(runs, last)
    levels_table, levels = level_markdown(level_scores(groups))
    table = markdown_table(runs, last) + aggregate_markdown(key, aggregate, last) + levels_table
    out.with_suffix(".md").write_text(f"![learning curves]({png.name})\n\n{table}")
    summary = {
        name: {
            "runs": [str(run_dir) for run_dir in groups[name]],
            "curves": {key: {"step": c.steps.tolist(), "mean": c.mean.tolist(), "std": c.std.tolist(),
                             "ci_low": c.low.tolist(), "ci_high": c.high.tolist(), "n": c.count.tolist()}
                       for key, c in curves[name].items()},
            "final": {key: final_values(label_runs, key, last) for key, _ in TABLE_COLUMNS},
            "final_ci": {key: bootstrap_ci(np.array(v), resamples=RESAMPLES).as_dict()
                         for key, _ in TABLE_COLUMNS if (v := final_values(label_runs, key, last))},
        }
        for name, label_runs in runs.items()
    }
    across = {"across_runs": {"metric": key, **aggregate}} if key else {}
    by_level = {"validation_levels": levels} if levels else {}
    out.with_suffix(".json").write_text(json.dumps(summary | across | by_level, indent=2))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run dirs or glob patterns (quote them), e.g. 'runs/compare/bandit/*'")
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix: writes .png .md .json")
    parser.add_argument("--last", type=int, default=5, help="steps averaged for the final table (default 5)")
    parser.add_argument("--title", default="", help="figure title (default: the --out name)")
    args = parser.parse_args(argv)
    run_dirs = [Path(p) for pattern in args.runs for p in (sorted(glob.glob(pattern)) or [pattern])]
    try:
        compare([p for p in run_dirs if p.is_dir()], args.out, args.last, args.title)
    except ValueError as error:
        parser.error(str(error))
    print(f"curves: {args.out.with_suffix('.png')}\ntable:  {args.out.with_suffix('.md')}")
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
