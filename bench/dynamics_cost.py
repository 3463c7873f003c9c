"""Cost and accuracy of the gradient-alignment analysis (issue 3).

For one checkpoint, times G for all six components (TOT, POS, NEG, TOP, MID, BOT) with each
path, as a ratio to one training step on the same batch B (forward, backward and optimizer
step), for DPO and PPO:

* jvp: gbar (one backward over D') + one forward-mode pass over B;
* finite_difference: gbar + two forward passes over B;
* direct: gbar + one backward pass per component (the reference);
* PPO only, "recompute": finite_difference as ``podyn dynamics`` runs it with
  ``dynamics.ppo_old_logps: recompute`` (pi_old at the checkpoint's weights, so rho = 1 exactly
  and neither pi_old nor G's s needs a forward pass: ``PPOBatch.at_current_weights``).

It also reports each path's relative error against the direct method in float64.

    python bench/dynamics_cost.py                      # embedded default model size, CPU
    python bench/dynamics_cost.py --size pythia-410m --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from podyn.batching import (  # noqa: E402
    encode_prompt,
    encode_response,
    pair_collator,  # noqa: E402
    prompt_response_batch,
)
from podyn.cli import prepare_torch  # noqa: E402
from podyn.data.synthetic import TaskConfig, generate_task, vocabulary  # noqa: E402
from podyn.dynamics import DPOBatch, PPOBatch, forward_mode_attention, gradient_alignment, gradient_alignment_direct  # noqa: E402
from podyn.generation import generate  # noqa: E402
from podyn.models import build_gpt_neox, build_word_tokenizer, sequence_logps  # noqa: E402
from podyn.objectives import COMPONENTS, masked_whiten, tertile_groups  # noqa: E402

SIZES = {
    "default": {"hidden_size": 64, "num_layers": 2, "num_heads": 2},
    "h128": {"hidden_size": 128, "num_layers": 4, "num_heads": 4},
    "pythia-410m": {"hidden_size": 1024, "num_layers": 24, "num_heads": 16, "vocab_size": 50304},
}


def build(size: str, dtype: torch.dtype, device: str):
    tokenizer = build_word_tokenizer(vocabulary())
    arch = dict(SIZES[size])
    vocab = arch.pop("vocab_size", len(tokenizer))
    model = build_gpt_neox(vocab, tokenizer, {**arch, "max_position_embeddings": 2048}, seed=0).to(
        device=device, dtype=dtype
    )
    model.config._attn_implementation = "sdpa"
    return tokenizer, model


def batches(tokenizer, model, n: int, device: str, list_len: int | None = None):
    lengths = {"min_len": list_len, "max_len": list_len} if list_len else {}
    task = generate_task(TaskConfig(n_sft=4, n_pref_train=n, n_pref_heldout=2, n_test=n, seed=0, **lengths))
    pairs = {k: v.to(device) for k, v in pair_collator(tokenizer, None, None)(task["prefs_train"]).items()}
    with torch.no_grad():
        chosen, rejected = (
            sequence_logps(model, pairs["input_ids"], pairs["attention_mask"], pairs["response_mask"]).float().chunk(2)
        )
    g = torch.Generator(device="cpu").manual_seed(0)
    dpo = DPOBatch(
        pairs["input_ids"],
        pairs["attention_mask"],
        pairs["response_mask"],
        (chosen.cpu() + 0.3 * torch.randn(n, generator=g)).to(device),
        (rejected.cpu() + 0.3 * torch.randn(n, generator=g)).to(device),
        0.5,
    )
    torch.manual_seed(0)
    roll = generate(
        model,
        tokenizer,
        [encode_prompt(tokenizer, r["prompt"]) for r in task["prefs_train"]],
        max_new_tokens=8,
        do_sample=True,
    )
    mask = roll.response_mask.float()
    stub = PPOBatch(
        roll.sequences, roll.attention_mask, roll.prompt_width, mask, mask * 0, mask * 0, mask.long() * 0, 0.2
    )
    with torch.no_grad():
        old = stub.logps(model).float() * mask
    adv = masked_whiten(torch.randn(mask.shape, generator=g).to(device), mask)
    ppo = PPOBatch(
        roll.sequences, roll.attention_mask, roll.prompt_width, mask, old, adv, tertile_groups(adv.abs(), mask), 0.2
    )
    final = [
        {
            k: v.to(device)
            for k, v in prompt_response_batch(
                [encode_prompt(tokenizer, r["prompt"]) for r in task["test"]],
                [encode_response(tokenizer, " one two three") for _ in task["test"]],
                tokenizer.pad_token_id,
            ).items()
        }
    ]
    return {"dpo": dpo, "ppo": ppo}, final


def cast(batch, dtype):
    return type(batch)(
        **{k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in vars(batch).items()}
    )


def timed(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def train_step(model, batch, optimizer):
    def step():
        optimizer.zero_grad()
        batch.component_losses(batch.logps(model))["tot"].backward()
        optimizer.step()

    return step


def g_paths(model, batch, final, dtype: torch.dtype) -> dict:
    """The ways of computing G that the table times, each a call returning {component: G}."""
    paths = {
        f"G, 6 components ({method})": lambda m=method: gradient_alignment(model, batch, final, m, fd_eps=1e-3).G
        for method in ("jvp", "finite_difference")
    }
    paths["G, 6 components (direct)"] = lambda: gradient_alignment_direct(model, batch, final)
    if isinstance(batch, PPOBatch):  # as the analysis runs it (dynamics.ppo_old_logps: recompute)
        current, s = batch.at_current_weights(torch.promote_types(dtype, torch.float32))
        paths["G, 6 (finite_difference, recompute)"] = lambda: (
            gradient_alignment(model, current, final, "finite_difference", fd_eps=1e-3, logps=s).G
        )
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="default", help="model size (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=64, help="pairs (DPO) / rollouts (PPO) in B, and prompts in D'")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: %(default)s)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="model dtype")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the table shows the median")
    parser.add_argument(
        "--list-len",
        type=int,
        default=None,
        help="words per prompt list (default: the task's 3 to 6); sets the sequence length",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    args = parser.parse_args()
    prepare_torch(args.threads)  # as every podyn job starts
    dtype = getattr(torch, args.dtype)
    tokenizer, model = build(args.size, dtype, args.device)
    data, final = batches(tokenizer, model, args.batch, args.device, args.list_len)
    reference = copy.deepcopy(model).double()
    final64 = final
    rows = []
    for name, batch in data.items():
        batch = cast(batch, dtype)
        exact = gradient_alignment_direct(reference, cast(batch, torch.float64), final64)
        scale = max(abs(v) for v in exact.values())
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)  # lr 0 keeps the weights fixed
        base = timed(train_step(model, batch, optimizer), args.repeats, args.device)
        rows.append((name, "train step", base, 1.0, float("nan")))
        for what, run in g_paths(model, batch, final, dtype).items():
            try:
                seconds = timed(run, args.repeats, args.device)
                G = run()
            except RuntimeError as err:  # e.g. a kernel without a forward-mode rule: report, go on
                print(f"{name} {what} failed: {str(err).splitlines()[0]}")
                continue
            error = max(abs(G[c] - exact[c]) for c in COMPONENTS) / scale
            rows.append((name, what, seconds, seconds / base, error))
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    width = data["dpo"].input_ids.shape[1]
    print(
        f"\nG cost at one checkpoint: size={args.size} dtype={args.dtype} batch={args.batch} sequence "
        f"length={width} device={device}"
    )
    print(f"{'objective':<10}{'what':<34}{'seconds':>10}{'x train step':>14}{'max rel. error vs float64':>28}")
    for name, what, seconds, ratio, error in rows:
        err = "" if error != error else f"{error:.1e}"
        print(f"{name:<10}{what:<34}{seconds:>10.4f}{ratio:>14.2f}{err:>28}")


if __name__ == "__main__":
    with forward_mode_attention():
        main()
