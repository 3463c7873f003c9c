"""The pieces of G's finite-difference cost, each against one training step, on the models and
batches of ``bench/dynamics_cost.py``: gbar over D', the forward pass over B at the checkpoint's
weights (pi_old and G's s), the two finite-difference passes over B and the loss sensitivities
(without their forward pass). Medians of ``--repeats`` calls, all in one process.

    python bench/reference/g_cost_pieces.py --size h128
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "src")]

import dynamics_cost  # noqa: E402

from podyn import dynamics  # noqa: E402
from podyn.cli import prepare_torch  # noqa: E402


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def pieces(model, batch, final) -> dict:
    gbar = dynamics.mean_nll_gradient(model, final)
    with torch.no_grad():
        logps = batch.logps(model)
    return {
        "gbar (forward + backward over D')": lambda: dynamics.mean_nll_gradient(model, final),
        "forward over B at these weights": lambda: torch.no_grad()(batch.logps)(model),
        "two finite-difference forwards over B": lambda: dynamics.directional_derivatives(
            model, batch, gbar, "finite_difference"
        ),
        "loss sensitivities (given s)": lambda: dynamics.loss_sensitivities(batch, logps),
        "whole G (finite_difference)": lambda: dynamics.gradient_alignment(model, batch, final, "finite_difference"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(dynamics_cost.SIZES), default="h128", help="model size")
    parser.add_argument("--repeats", type=int, default=40, help="timed calls per piece (median)")
    args = parser.parse_args()
    prepare_torch(2)
    tokenizer, model = dynamics_cost.build(args.size, torch.float32, "cpu")
    data, final = dynamics_cost.batches(tokenizer, model, 64, "cpu")
    for name, batch in data.items():
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)  # lr 0 keeps the weights fixed
        step = median_seconds(dynamics_cost.train_step(model, batch, optimizer), args.repeats)
        rows = final[0]["input_ids"].shape[0]
        print(f"{name}: train step {step * 1e3:.1f} ms; B {batch.n_rows} rows, D' {rows} rows")
        for what, fn in pieces(model, batch, final).items():
            seconds = median_seconds(fn, args.repeats)
            print(f"  {what:<40}{seconds * 1e3:8.1f} ms {seconds / step:6.2f}x step")


if __name__ == "__main__":
    main()
