#!/usr/bin/env python
r"""Peer comparison of podyn's DPO with TRL's ``DPOTrainer`` (sigmoid loss).

Both measurements use one GPT-NeoX model, one batch of synthetic-task preference pairs
and one device:

1. **Parity** (float32, no autocast). Ours: ``dpo_terms(...).loss`` for the value and the
   gradient of ``dpo_component_loss`` with default weights, both from ``sequence_logps``
   over ``pair_collator``'s batch. TRL: ``DPOTrainer.compute_loss`` on the batch that
   TRL's own tokenisation and ``DataCollatorForPreference`` build from the same rows, with
   reference log-probs from TRL's own precompute pass. Checked: the two batches are
   identical, the reference log-probs, the loss and every parameter's gradient agree within
   float32 round-off. The policy is the reference plus Gaussian noise scaled so that the
   DPO margins have a standard deviation of about 1 (neither all 0 nor saturated), so the
   per-pair weights sigmoid(-m) differ from pair to pair.
2. **Step time**: N optimizer steps (forward, backward, optimizer step) on the same batch,
   from the same initial weights, by TRL's ``trainer.train()`` (its default: a reference
   forward every step; and ``precompute_ref_log_probs=True``) and by our ``DPOModule``
   driven by a Lightning ``Trainer`` (reference log-probs precomputed, as the pipeline
   does). Timestamps at the trainers' step hooks, the device synchronised at each.

Issue 11's acceptance setting (``--data hh-rlhf``): real HH-RLHF pairs (the prompt is the
dialogue up to the last ``Assistant:`` marker), tokenised by a byte-level BPE trained on the
same file with ``tokenizers`` (no hub), consecutive batches in file-sample order on both sides;
TRL with precomputed reference log-probs (``--trl-only-precomputed``) against podyn with its
options (``--chunk-tokens``, ``--pack``, ``--max-grad-norm``), each timed in its own
subprocess (``--isolate``) so that its peak resident memory (VmHWM, reset by ``echo 5 >
/proc/self/clear_refs`` after imports and model build) is its own. TRL 1.16's DPO has no
``use_logits_to_keep`` option, ignores ``padding_free`` (it warns and pads), and always uses
its fused, chunked LM head; its best settings here are its defaults (fused AdamW) with
precomputed reference log-probs and no gradient checkpointing. The last line printed is
``speedup <pairs/s ratio> memory <peak memory ratio>``, podyn over TRL precomputed::

    python bench/trl_dpo.py --model-size pythia-70m --data hh-rlhf --pairs 4 --warmup 1 --steps 3 \
        --threads 1 --chunk-tokens 256 --pack --max-grad-norm 1.0 --isolate --trl-only-precomputed

Run ``python bench/trl_dpo.py --help``. Nothing is downloaded: the Pythia sizes are
Pythia's architecture (``GPTNeoXConfig`` with Pythia's dimensions) with random weights.
"""

from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's reference precompute progress bar

import argparse
import copy
import csv
import gc
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing podyn

from podyn.batching import pair_collator  # noqa: E402
from podyn.cli import prepare_torch  # noqa: E402
from podyn.data.synthetic import WORDS, TaskConfig, generate_task, vocabulary  # noqa: E402
from podyn.models import build_gpt_neox, build_word_tokenizer, prepare_tokenizer, sequence_logps  # noqa: E402
from podyn.objectives import ComponentWeights, dpo_component_loss, dpo_terms  # noqa: E402

HH_FILE = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
ASSISTANT = "\n\nAssistant:"

PYTHIA_VOCAB = 50304  # Pythia's embedding rows (the tokenizer's 50277 ids, padded)
PYTHIA = {
    "pythia-70m": {"hidden_size": 512, "num_layers": 6, "num_heads": 8, "intermediate_size": 2048},
    "pythia-410m": {"hidden_size": 1024, "num_layers": 24, "num_heads": 16, "intermediate_size": 4096},
    "pythia-1.4b": {"hidden_size": 2048, "num_layers": 24, "num_heads": 16, "intermediate_size": 8192},
}
PYTHIA_COMMON = {"rotary_pct": 0.25, "max_position_embeddings": 2048}

# Float32 parity tolerances. Both sides run the same backbone kernels but differ in the LM
# head (ours: full logits and log_softmax; TRL: vocabulary tiles folded into an online
# logsumexp) and in summation order. A sequence log-prob is a sum of n token log-probs, so
# the two sides may differ by its rounding error, which for float32 is typically
#   eps = sqrt(n) * U * max |log p(y|x)|,   U = 2^-24   (Higham's probabilistic bound).
# We require: reference log-probs within eps; the loss within beta * eps (it is a mean of
# -log sigmoid(m) with |d/dm| <= 1 and m = beta * [(c - c_ref) - (r - r_ref)]); the
# gradients within beta * eps relative (the relative error of each pair's weight
# sigmoid(-m) is at most the error of m) plus GRAD_FLOOR (float32 accumulation in the
# backward pass), and PER_TENSOR times that for the worst single parameter tensor.
# Observed on the CPU: 9-150x below these bounds on the tiny model (64 and 512 tokens),
# 4-25x on Pythia-410M (64 tokens). A real discrepancy is caught by orders of magnitude:
# beta off by 0.1% gives 4-17x the bounds, one dropped response token 20-350x.
U = 2.0**-24
GRAD_FLOOR = 1e-6
PER_TENSOR = 10.0


# ----------------------------------------------------------------------------- setup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/trl_dpo.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model-size",
        choices=["tiny", *PYTHIA],
        default="tiny",
        help="tiny: config.yaml's model.arch; Pythia sizes: Pythia's architecture, random weights (default: "
        "%(default)s)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default: %(default)s")
    parser.add_argument("--pairs", type=int, default=8, help="preference pairs per batch (default: %(default)s)")
    parser.add_argument(
        "--seq-len",
        type=int,
        default=512,
        help="tokens per padded row: responses are lengthened with task words to lengths in [3/4, 1] x "
        "seq-len; 0 keeps the task's natural lengths (default: %(default)s)",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="time with bf16 autocast (TRL bf16=True, Lightning bf16-mixed); parity is always float32",
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="time with gradient checkpointing on both sides (TRL's DPOConfig default; off here as in podyn)",
    )
    parser.add_argument("--attn", default="sdpa", help="attention implementation, both sides (default: %(default)s)")
    parser.add_argument(
        "--steps", type=int, default=20, help="timed optimizer steps per implementation (default: %(default)s)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first, at least 1 (default: %(default)s)")
    parser.add_argument("--beta", type=float, default=None, help="DPO beta (default: the config's dpo.beta)")
    parser.add_argument(
        "--lr", type=float, default=None, help="learning rate, constant, both sides (default: the config's dpo.lr)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="data, initial weights and parity noise (default: %(default)s)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=ROOT / "config.yaml",
        help="where the tiny architecture, beta and lr come from (default: config.yaml)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: torch's)")
    parser.add_argument(
        "--data",
        choices=["synthetic", "hh-rlhf"],
        default="synthetic",
        help="synthetic: the task's pairs lengthened to --seq-len, one batch repeated; hh-rlhf: consecutive "
        "batches of real HH-RLHF pairs (--hh-file) with a byte-level BPE trained on that file (default: %(default)s)",
    )
    parser.add_argument(
        "--hh-file",
        type=Path,
        default=HH_FILE,
        help="HH-RLHF jsonl(.gz) with chosen/rejected dialogues (default: %(default)s, the harmless-base test "
        "split that sits beside the checkout in CI)",
    )
    parser.add_argument(
        "--hh-stats",
        action="store_true",
        help="print how many pairs of --hh-file fit --max-tokens, their median length and the BPE's size, "
        "then exit (the tokenizer is trained under --out, as a timed run would)",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=512,
        help="hh-rlhf: pairs whose longer row exceeds this many tokens are skipped, not truncated (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--chunk-tokens",
        type=int,
        default=0,
        help="podyn's trainer.logps_chunk_tokens, in parity and timing (default: %(default)s)",
    )
    parser.add_argument("--pack", action="store_true", help="podyn's trainer.pack_sequences, in parity and timing")
    parser.add_argument(
        "--max-grad-norm",
        type=float,
        default=None,
        help="podyn's gradient clipping in the timed run (TRL clips at its default 1.0; default: none)",
    )
    parser.add_argument(
        "--trl-only-precomputed", action="store_true", help="time TRL only with precomputed reference log-probs"
    )
    parser.add_argument(
        "--isolate",
        action="store_true",
        help="time each implementation in its own subprocess and report its peak resident memory (VmHWM) "
        "during the run",
    )
    parser.add_argument("--worker", choices=["trl", "trl-ref", "podyn"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--skip-parity", action="store_true", help="only time")
    parser.add_argument("--skip-timing", action="store_true", help="only check parity")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("OUT") or ROOT / "bench" / "out" / "trl_dpo"),
        help="where parity.json, timing.csv and timing.md go (default: $OUT, else bench/out/trl_dpo)",
    )
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (a step period needs the step before it)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU")
    return args


def quiet_libraries() -> None:
    """Progress bars and info banners off; every printed line is ours or an error."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*self.log.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="trl")
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' gradient_checkpointing renames


def bench_settings(args: argparse.Namespace) -> dict[str, Any]:
    """beta, lr and the tiny architecture, from the pipeline's config unless overridden."""
    cfg = yaml.safe_load(args.config.read_text())
    return {
        "beta": args.beta if args.beta is not None else float(cfg["dpo"]["beta"]),
        "lr": args.lr if args.lr is not None else float(cfg["dpo"]["lr"]),
        "tiny_arch": dict(cfg["model"]["arch"]),
    }


def build_model(
    size: str, tokenizer, tiny_arch: dict[str, Any], seq_len: int, attn: str, seed: int, device: str
) -> torch.nn.Module:
    """The initial policy, on the CPU: config.yaml's tiny model or a Pythia-size one
    (initialised on ``device``, which is much faster for billions of weights)."""
    if size == "tiny":
        arch, vocab = {**tiny_arch}, len(tokenizer)
    else:
        arch, vocab = {**PYTHIA[size], **PYTHIA_COMMON}, PYTHIA_VOCAB
    arch["max_position_embeddings"] = max(arch.get("max_position_embeddings", 64), seq_len)
    with torch.device(device):
        model = build_gpt_neox(vocab, tokenizer, arch, seed)
    model.set_attn_implementation(attn)
    return model.to("cpu").float()


def make_rows(n_pairs: int, seq_len: int, seed: int, tokenizer) -> list[dict[str, str]]:
    """``n_pairs`` preference pairs of the synthetic task (prompt, chosen, rejected). With
    ``seq_len``, each response is lengthened with random task words so that prompt +
    response + EOS has a random length in [3/4 seq_len, seq_len] tokens, the first chosen
    row exactly ``seq_len``: the padded batch is (2 n_pairs, seq_len) and has padding."""
    # empty splits, which a workflow config may not ask for: construct without validation
    task = TaskConfig.model_construct(seed=seed, n_sft=0, n_pref_train=n_pairs, n_pref_heldout=0, n_test=0)
    rows = generate_task(task)["prefs_train"]
    if not seq_len:
        return rows
    rng = np.random.default_rng(seed)
    for i, row in enumerate(rows):
        prompt_len = len(tokenizer(row["prompt"], add_special_tokens=False).input_ids)
        for key in ("chosen", "rejected"):
            words = row[key].split()
            total = seq_len if (i, key) == (0, "chosen") else int(rng.integers(3 * seq_len // 4, seq_len + 1))
            extra = max(0, total - prompt_len - 1 - len(words))  # -1: the EOS token
            row[key] = " " + " ".join(words + list(rng.choice(WORDS, size=extra)))
    return rows


def hh_pairs(path: Path) -> list[dict[str, str]]:
    """HH-RLHF rows as (prompt, chosen, rejected): the prompt is the dialogue up to and including
    the chosen row's last ``Assistant:`` turn marker, the responses what follows it in each row.
    Rows whose rejected dialogue does not share that prompt, or with an empty response, are skipped."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    pairs = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            cut = row["chosen"].rfind(ASSISTANT) + len(ASSISTANT)
            prompt = row["chosen"][:cut]
            if cut < len(ASSISTANT) or not row["rejected"].startswith(prompt):
                continue
            chosen, rejected = row["chosen"][cut:], row["rejected"][cut:]
            if chosen.strip() and rejected.strip():
                pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return pairs


def hh_tokenizer(path: Path, cache: Path):
    """A byte-level BPE (GPT-NeoX's kind, up to its 50277 ids) trained on the file's dialogues,
    with Pythia's EOS and padding tokens; trained once and kept at ``cache`` so that every
    subprocess of one run tokenises alike."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from podyn.models import EOS_TOKEN, PAD_TOKEN

    if not cache.exists():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=50277,
            special_tokens=[EOS_TOKEN, PAD_TOKEN],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        texts = [p[k] for p in hh_pairs(path) for k in ("prompt", "chosen", "rejected")]
        tok.train_from_iterator(texts, trainer)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tok.save(str(tmp))
        tmp.replace(cache)
    return prepare_tokenizer(
        PreTrainedTokenizerFast(tokenizer_file=str(cache), eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)
    )


def longer_row_tokens(row: dict[str, str], tokenizer) -> int:
    """Tokens of a pair's longer row: prompt, the longer response and EOS."""
    prompt = len(tokenizer(row["prompt"], add_special_tokens=False).input_ids)
    return prompt + max(len(tokenizer(row[k], add_special_tokens=False).input_ids) for k in ("chosen", "rejected")) + 1


def print_hh_stats(path: Path, max_tokens: int, tokenizer) -> None:
    lengths = [longer_row_tokens(row, tokenizer) for row in hh_pairs(path)]
    kept = [n for n in lengths if n <= max_tokens]
    print(f"{path}: {len(lengths)} pairs; BPE ids: {len(tokenizer)}")
    print(f"longer row <= {max_tokens} tokens: {len(kept)} of {len(lengths)} ({100 * len(kept) / len(lengths):.1f}%)")
    print(f"median longer-row tokens: {np.median(kept):g} among those, {np.median(lengths):g} over all pairs")


def hh_rows(path: Path, n_pairs: int, max_tokens: int, seed: int, tokenizer) -> list[dict[str, str]]:
    """``n_pairs`` HH-RLHF pairs drawn at random (``seed``) among those whose longer row (prompt,
    response, EOS) has at most ``max_tokens`` tokens, so lengths vary as in the data below the cap."""
    pairs = hh_pairs(path)
    order = np.random.default_rng(seed).permutation(len(pairs))
    rows = []
    for i in order:
        row = pairs[i]
        if longer_row_tokens(row, tokenizer) <= max_tokens:
            rows.append(row)
            if len(rows) == n_pairs:
                return rows
    raise ValueError(f"{path}: only {len(rows)} pairs of at most {max_tokens} tokens, {n_pairs} asked for")


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def free_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def dpo_config(
    out_dir: str,
    args: argparse.Namespace,
    settings: dict[str, Any],
    *,
    precompute: bool,
    bf16: bool,
    gradient_checkpointing: bool,
    max_steps: int = -1,
):
    """TRL's DPOConfig: the batch, beta, lr and precision set to match ours; offline, no
    checkpoints, no reporting; everything else TRL's default (sigmoid loss, fused AdamW,
    gradient clipping at 1.0)."""
    from trl import DPOConfig

    return DPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=args.pairs,
        max_steps=max_steps,
        learning_rate=settings["lr"],
        lr_scheduler_type="constant",
        beta=settings["beta"],
        loss_type="sigmoid",
        bf16=bf16,
        gradient_checkpointing=gradient_checkpointing,
        precompute_ref_log_probs=precompute,
        max_length=None,
        use_cpu=args.device == "cpu",
        train_sampling_strategy="sequential",  # batches in the data's order, as ours (hh-rlhf: same batches each side)
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=args.seed,
    )


# ----------------------------------------------------------------------------- parity


@dataclass
class Parity:
    """Float32 agreement of our DPO loss and gradients with TRL's, on one batch."""

    batches_identical: bool
    ref_logps_max_abs_err: float
    loss_ours: float
    loss_trl: float
    loss_abs_err: float
    grad_global_rel_err: float
    grad_worst_tensor_rel_err: float
    grad_worst_tensor: str
    grad_norm: float
    margin_mean: float
    margin_std: float
    n_tensors: int
    rounding_eps: float
    tolerances: dict[str, float] = field(default_factory=dict)
    passed: bool = False


def _set_noise(policy: torch.nn.Module, ref: torch.nn.Module, scale: float, seed: int) -> None:
    """policy = ref + scale * N(0, 1), the noise drawn afresh from ``seed`` (same draws for every scale)."""
    device = next(policy.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for p, r in zip(policy.parameters(), ref.parameters(), strict=True):
            p.copy_(r + scale * torch.randn(p.shape, generator=gen, device=device, dtype=p.dtype))


def _margins(
    policy: torch.nn.Module, batch: dict[str, torch.Tensor], ref_c: torch.Tensor, ref_r: torch.Tensor, beta: float
) -> torch.Tensor:
    with torch.no_grad():
        c, r = sequence_logps(policy, batch["input_ids"], batch["attention_mask"], batch["response_mask"]).chunk(2)
    return beta * ((c - ref_c) - (r - ref_r))


def perturbed_policy(
    ref: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    ref_c: torch.Tensor,
    ref_r: torch.Tensor,
    beta: float,
    seed: int,
) -> torch.nn.Module:
    """The reference plus Gaussian noise whose scale is calibrated (one probe, margins being
    about linear in a small scale) so that the DPO margins have a standard deviation near 1."""
    policy = copy.deepcopy(ref)
    probe = 1e-3
    _set_noise(policy, ref, probe, seed)
    spread = float(_margins(policy, batch, ref_c, ref_r, beta).std())
    _set_noise(policy, ref, probe / spread if spread > 0 else probe, seed)
    return policy


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=torch.finfo(b.dtype).tiny))


def logps_options(args: argparse.Namespace) -> dict[str, int | bool]:
    """podyn's sequence_logps options (trainer.logps_chunk_tokens, trainer.pack_sequences)."""
    return {"chunk_tokens": getattr(args, "chunk_tokens", 0), "packed": getattr(args, "pack", False)}


def our_loss_and_grads(
    policy: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    ref_c: torch.Tensor,
    ref_r: torch.Tensor,
    beta: float,
    options: dict | None = None,
):
    """Our value (``dpo_terms(...).loss``), our gradients (of ``dpo_component_loss`` with
    default weights, what DPOModule backpropagates) and the margins."""
    policy.zero_grad(set_to_none=True)
    c, r = sequence_logps(
        policy, batch["input_ids"], batch["attention_mask"], batch["response_mask"], **(options or {})
    ).chunk(2)
    terms = dpo_terms(c, r, ref_c, ref_r, beta)
    dpo_component_loss(c, r, terms.omega, terms.groups, ComponentWeights()).backward()
    grads = {n: p.grad.detach().cpu().clone() for n, p in policy.named_parameters()}
    logps = torch.stack([c, r, ref_c, ref_r]).detach().cpu()
    return float(terms.loss.detach()), grads, terms.margin.detach().cpu(), logps


def trl_loss_and_grads(
    policy: torch.nn.Module,
    ref: torch.nn.Module,
    rows: list[dict],
    tokenizer,
    args: argparse.Namespace,
    settings: dict[str, Any],
):
    """TRL's batch (its tokenisation and collator), its precomputed reference log-probs, its
    ``compute_loss`` value and the gradients of that loss."""
    from datasets import Dataset
    from trl import DPOTrainer

    with tempfile.TemporaryDirectory() as tmp:
        config = dpo_config(tmp, args, settings, precompute=True, bf16=False, gradient_checkpointing=False)
        trainer = DPOTrainer(
            model=policy, ref_model=ref, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
        )
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
        inputs = trainer._prepare_inputs(batch)
        trainer.model.train()
        trainer.model.zero_grad(set_to_none=True)
        loss = trainer.compute_loss(trainer.model, inputs)
        loss.backward()
        grads = {n: p.grad.detach().cpu().clone() for n, p in trainer.model.named_parameters()}
    return float(loss.detach()), grads, batch


def check_parity(
    pristine: torch.nn.Module, rows: list[dict], tokenizer, args: argparse.Namespace, settings: dict[str, Any]
) -> Parity:
    """Compare our DPO loss and gradients with TRL's on one float32 batch (see module doc)."""
    device, beta = args.device, settings["beta"]
    batch = {k: v.to(device) for k, v in pair_collator(tokenizer, None, None)(rows).items()}
    ref = copy.deepcopy(pristine).to(device).eval()
    with torch.no_grad():  # as the pipeline's reference_logps stage
        ref_c, ref_r = (
            sequence_logps(
                ref, batch["input_ids"], batch["attention_mask"], batch["response_mask"], **logps_options(args)
            )
            .double()
            .chunk(2)
        )
    ref_c, ref_r = ref_c.float(), ref_r.float()  # DPOModule casts to the policy's log-prob dtype
    policy = perturbed_policy(ref, batch, ref_c, ref_r, beta, args.seed).train()

    loss_ours, grads_ours, margins, logps = our_loss_and_grads(policy, batch, ref_c, ref_r, beta, logps_options(args))
    policy.zero_grad(set_to_none=True)
    policy, ref = policy.to("cpu"), ref.to("cpu")  # TRL places them itself; free the device first
    free_memory(device)
    loss_trl, grads_trl, trl_batch = trl_loss_and_grads(policy, ref, rows, tokenizer, args, settings)
    del policy, ref
    free_memory(device)

    identical = all(
        torch.equal(trl_batch[k].cpu(), batch[o].cpu())
        for k, o in (
            ("input_ids", "input_ids"),
            ("attention_mask", "attention_mask"),
            ("completion_mask", "response_mask"),
        )
    )
    ref_err = float(
        torch.cat([trl_batch["ref_chosen_logps"] - ref_c.cpu(), trl_batch["ref_rejected_logps"] - ref_r.cpu()])
        .abs()
        .max()
    )
    n_tokens = int(batch["response_mask"].sum(1).max())
    eps = n_tokens**0.5 * U * float(logps.abs().max())
    tol = {"ref_logps_abs": eps, "loss_abs": beta * eps, "grad_global_rel": beta * eps + GRAD_FLOOR}
    tol["grad_tensor_rel"] = PER_TENSOR * tol["grad_global_rel"]
    per_tensor = {n: _rel(grads_ours[n], grads_trl[n]) for n in grads_trl}
    worst = max(per_tensor, key=per_tensor.get)
    flat_ours = torch.cat([g.flatten() for g in grads_ours.values()])
    flat_trl = torch.cat([grads_trl[n].flatten() for n in grads_ours])
    result = Parity(
        batches_identical=identical,
        ref_logps_max_abs_err=ref_err,
        loss_ours=loss_ours,
        loss_trl=loss_trl,
        loss_abs_err=abs(loss_ours - loss_trl),
        grad_global_rel_err=_rel(flat_ours, flat_trl),
        grad_worst_tensor_rel_err=per_tensor[worst],
        grad_worst_tensor=worst,
        grad_norm=float(flat_trl.norm()),
        margin_mean=float(margins.mean()),
        margin_std=float(margins.std()),
        n_tensors=len(per_tensor),
        rounding_eps=eps,
        tolerances=tol,
    )
    result.passed = (
        identical
        and set(grads_ours) == set(grads_trl)
        and ref_err <= tol["ref_logps_abs"]
        and result.loss_abs_err <= tol["loss_abs"]
        and result.grad_global_rel_err <= tol["grad_global_rel"]
        and result.grad_worst_tensor_rel_err <= tol["grad_tensor_rel"]
    )
    return result


def format_parity(p: Parity) -> str:
    tol = p.tolerances
    return "\n".join(
        [
            f"parity (float32, {p.n_tensors} parameter tensors): {'PASS' if p.passed else 'FAIL'}",
            f"  batches identical (input_ids, attention_mask, completion/response mask): {p.batches_identical}",
            f"  float32 rounding of a sequence log-prob, sqrt(n) U max|logp|: {p.rounding_eps:.2e} nats",
            f"  reference log-probs, TRL precompute vs ours: max |diff| {p.ref_logps_max_abs_err:.2e} (tol "
            f"{tol['ref_logps_abs']:.2e})",
            f"  loss: ours {p.loss_ours:.8f}  TRL {p.loss_trl:.8f}  |diff| {p.loss_abs_err:.2e} (tol "
            f"{tol['loss_abs']:.2e})",
            f"  gradients: global rel err {p.grad_global_rel_err:.2e} (tol {tol['grad_global_rel']:.2e}); "
            f"worst tensor {p.grad_worst_tensor} {p.grad_worst_tensor_rel_err:.2e} "
            f"(tol {tol['grad_tensor_rel']:.2e}); ||g|| {p.grad_norm:.4g}",
            f"  margins beta*(logratio+ - logratio-): mean {p.margin_mean:+.3f}, std {p.margin_std:.3f}",
        ]
    )


# ----------------------------------------------------------------------------- step time


class StepClock:
    """Wall-clock stamps at the start and end of each optimizer step, the device synchronised
    at each stamp so that queued GPU work is counted in the step that queued it."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.begins: list[float] = []
        self.ends: list[float] = []

    def begin(self) -> None:
        synchronize(self.device)
        self.begins.append(time.perf_counter())

    def end(self) -> None:
        synchronize(self.device)
        self.ends.append(time.perf_counter())


@dataclass
class Timing:
    """Steady-state step time of one implementation, after ``warmup`` untimed steps.

    ``step_ms``: median time from one step's end to the next's (everything the trainer does
    per step: data loading, forward, backward, optimizer, logging). ``compute_ms``: median
    time inside the step hooks (forward, backward, clipping, optimizer step, zero_grad).
    ``pairs_per_s``: pairs per batch over the mean step period."""

    implementation: str
    reference: str
    steps: int
    pairs_per_s: float
    step_ms: float
    compute_ms: float
    peak_gpu_mb: float | None
    details: str
    peak_rss_mb: float | None = None  # --isolate: the subprocess's VmHWM from just before the trainer to the end
    rss_growth_mb: float | None = None  # that peak minus the resident memory when it was reset


def summarize(
    clock: StepClock, name: str, reference: str, warmup: int, pairs: int, peak_gpu_mb: float | None, details: str
) -> Timing:
    periods = np.diff(clock.ends)[warmup - 1 :]
    busy = [e - b for b, e in zip(clock.begins[warmup:], clock.ends[warmup:], strict=True)]
    if len(periods) == 0:
        raise RuntimeError(f"{name}: {len(clock.ends)} steps recorded, none after the warm-up")
    return Timing(
        implementation=name,
        reference=reference,
        steps=len(periods),
        pairs_per_s=pairs / float(np.mean(periods)),
        step_ms=1e3 * statistics.median(periods),
        compute_ms=1e3 * statistics.median(busy),
        peak_gpu_mb=peak_gpu_mb,
        details=details,
    )


def _reset_peak(device: str) -> None:
    free_memory(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None


def time_trl(
    pristine: torch.nn.Module,
    rows: list[dict],
    tokenizer,
    args: argparse.Namespace,
    settings: dict[str, Any],
    precompute: bool,
    copy_model: bool = True,
) -> Timing:
    """TRL's ``trainer.train()`` for warm-up + steps optimizer steps on the one batch."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOTrainer

    clock = StepClock(args.device)

    class Stamp(TrainerCallback):
        def on_step_begin(self, *_, **__):
            clock.begin()

        def on_step_end(self, *_, **__):
            clock.end()

    _reset_peak(args.device)
    policy = copy.deepcopy(pristine) if copy_model else pristine
    # Without precompute TRL needs a reference model; given none it would reload the policy
    # from its hub name, which a model built from a config does not have.
    ref = None if precompute else copy.deepcopy(pristine)
    with tempfile.TemporaryDirectory() as tmp:
        config = dpo_config(
            tmp,
            args,
            settings,
            precompute=precompute,
            bf16=args.bf16,
            gradient_checkpointing=args.gradient_checkpointing,
            max_steps=args.warmup + args.steps,
        )
        trainer = DPOTrainer(
            model=policy,
            ref_model=ref,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[Stamp()],
        )
        trainer.remove_callback(PrinterCallback)  # TRL still logs every logging_steps; we only don't print it
        trainer.train()
        details = f"optim={getattr(config.optim, 'value', config.optim)}, max_grad_norm={config.max_grad_norm}"
        timing = summarize(
            clock,
            "TRL DPOTrainer",
            "precomputed" if precompute else "forward each step",
            args.warmup,
            args.pairs,
            _peak(args.device),
            details,
        )
    del trainer, policy, ref
    free_memory(args.device)
    return timing


def our_reference_logps(
    model: torch.nn.Module, rows: list[dict], collate: Callable, args: argparse.Namespace
) -> list[dict]:
    """The rows with ``ref_chosen``/``ref_rejected`` added, as the pipeline's reference_logps
    stage computes them (under the same autocast as the timed training)."""
    model = model.to(args.device).eval()
    out: list[dict] = []
    with torch.no_grad(), torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.bf16):
        for start in range(0, len(rows), args.pairs):
            chunk = rows[start : start + args.pairs]
            batch = {k: v.to(args.device) for k, v in collate(chunk).items()}
            c, r = (
                sequence_logps(
                    model, batch["input_ids"], batch["attention_mask"], batch["response_mask"], **logps_options(args)
                )
                .double()
                .chunk(2)
            )
            out += [
                {**row, "ref_chosen": float(a), "ref_rejected": float(b)}
                for row, a, b in zip(chunk, c, r, strict=True)
            ]
    return out


def time_ours(
    pristine: torch.nn.Module,
    rows: list[dict],
    tokenizer,
    args: argparse.Namespace,
    settings: dict[str, Any],
    copy_model: bool = True,
) -> Timing:
    """Our DPOModule under a Lightning Trainer for warm-up + steps optimizer steps, the
    reference log-probs computed first by the policy itself (which is the reference before
    training; TRL's precompute does the same)."""
    import lightning as L
    from torch.utils.data import DataLoader

    from podyn.config import DPOConfig
    from podyn.training.dpo import DPOModule

    clock = StepClock(args.device)

    class Stamp(L.Callback):
        def on_train_batch_start(self, *_, **__):
            clock.begin()

        def on_train_batch_end(self, *_, **__):
            clock.end()

    _reset_peak(args.device)
    collate = pair_collator(tokenizer, None, None)
    policy = copy.deepcopy(pristine) if copy_model else pristine
    data = our_reference_logps(policy, rows, collate, args)  # the SFT model is the reference
    free_memory(args.device)
    if args.gradient_checkpointing:
        policy.gradient_checkpointing_enable()
    steps = args.warmup + args.steps
    hyper = DPOConfig(
        beta=settings["beta"],
        lr=settings["lr"],
        max_steps=steps,
        warmup_steps=0,
        lr_schedule="constant",
        weight_decay=0.0,
    )
    module = DPOModule(policy, hyper, {}, recorder=None, logps_options=logps_options(args))
    loader = DataLoader(data, batch_size=args.pairs, shuffle=False, drop_last=True, collate_fn=collate)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="gpu" if args.device == "cuda" else "cpu",
            devices=1,
            precision="bf16-mixed" if args.bf16 else "32-true",
            max_steps=steps,
            max_epochs=-1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            gradient_clip_val=args.max_grad_norm,
            gradient_clip_algorithm="norm" if args.max_grad_norm else None,
            default_root_dir=tmp,
            callbacks=[Stamp()],
        )
        trainer.fit(module, train_dataloaders=loader)
    optimizer = type(trainer.optimizers[0]).__name__
    options = ", ".join(f"{k}={v}" for k, v in logps_options(args).items())
    clip = f"max_grad_norm={args.max_grad_norm}" if args.max_grad_norm else "no clipping"
    fused = getattr(trainer.optimizers[0], "defaults", {}).get("fused")
    timing = summarize(
        clock,
        "podyn DPOModule (Lightning)",
        "precomputed",
        args.warmup,
        args.pairs,
        _peak(args.device),
        f"optim={optimizer} (fused={fused}), {clip}, {options}",
    )
    del trainer, module, policy
    free_memory(args.device)
    return timing


TIMING_LEGEND = (
    "pairs/s: pairs per batch / mean step period; step ms: median step period (one step's end to the next's: "
    "data, forward, backward, optimizer, logging); fwd+bwd+opt ms: median time inside the trainer's step hooks; "
    "vs TRL: pairs/s over TRL's (>1 is faster)."
)


def format_timings(timings: list[Timing]) -> str:
    """Markdown table; ratios are pairs/s over TRL's (default, then precomputed reference)."""
    base = {t.reference: t.pairs_per_s for t in timings if t.implementation.startswith("TRL")}
    has_gpu = any(t.peak_gpu_mb is not None for t in timings)
    has_rss = any(t.peak_rss_mb is not None for t in timings)
    head = (
        [
            "implementation",
            "reference log-probs",
            "pairs/s",
            "step ms",
            "fwd+bwd+opt ms",
            "vs TRL default",
            "vs TRL precomputed",
        ]
        + (["peak GPU MB"] if has_gpu else [])
        + (["peak RSS MB", "RSS growth MB"] if has_rss else [])
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in timings:
        ratios = [
            f"{t.pairs_per_s / base[k]:.2f}x" if k in base else "n/a" for k in ("forward each step", "precomputed")
        ]
        cells = [
            t.implementation,
            t.reference,
            f"{t.pairs_per_s:.2f}",
            f"{t.step_ms:.1f}",
            f"{t.compute_ms:.1f}",
            *ratios,
        ] + ([f"{t.peak_gpu_mb:.0f}"] if has_gpu else [])
        cells += [f"{t.peak_rss_mb:.0f}", f"{t.rss_growth_mb:.0f}"] if has_rss else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def environment(args: argparse.Namespace) -> dict[str, str]:
    import lightning
    import transformers
    import trl

    env = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "lightning": lightning.__version__,
        "threads": str(torch.get_num_threads()),
    }
    env["device"] = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({os.cpu_count()} cores)"
    return env


def write_outputs(out: Path, header: dict[str, Any], parity: Parity | None, timings: list[Timing]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if parity is not None:
        (out / "parity.json").write_text(json.dumps({**header, **asdict(parity)}, indent=2) + "\n")
    if timings:
        with open(out / "timing.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[*header, *asdict(timings[0])])
            writer.writeheader()
            writer.writerows({**header, **asdict(t)} for t in timings)
        settings = ", ".join(f"{k}={v}" for k, v in header.items())
        notes = "\n".join(f"- {t.implementation} ({t.reference}): {t.details}" for t in timings)
        (out / "timing.md").write_text(f"{settings}\n\n{format_timings(timings)}\n\n{TIMING_LEGEND}\n\n{notes}\n")


@dataclass
class Setup:
    """What both measurements share: settings, tokenizer, rows and the initial weights (CPU)."""

    settings: dict[str, Any]
    tokenizer: Any
    rows: list[dict]
    pristine: torch.nn.Module
    padded_len: int
    build_s: float


def prepare(args: argparse.Namespace) -> Setup:
    """hh-rlhf: pairs x (warm-up + steps) rows, consecutive batches of ``pairs`` (parity uses the first)."""
    prepare_torch(args.threads)  # as every podyn job starts
    settings = bench_settings(args)
    if args.data == "hh-rlhf":
        if not args.hh_file.exists():
            raise SystemExit(f"--hh-file {args.hh_file}: no such file")
        tokenizer = hh_tokenizer(args.hh_file, args.out / "hh_tokenizer.json")
        rows = hh_rows(args.hh_file, args.pairs * (args.warmup + args.steps), args.max_tokens, args.seed, tokenizer)
        args.seq_len = args.max_tokens  # positions the model must cover
    else:
        tokenizer = prepare_tokenizer(build_word_tokenizer(vocabulary()))
        rows = make_rows(args.pairs, args.seq_len, args.seed, tokenizer)
    start = time.perf_counter()
    pristine = build_model(
        args.model_size, tokenizer, settings["tiny_arch"], args.seq_len, args.attn, args.seed, args.device
    )
    build_s = time.perf_counter() - start
    padded_len = pair_collator(tokenizer, None, None)(rows[: args.pairs])["input_ids"].shape[1]
    return Setup(settings, tokenizer, rows, pristine, padded_len, build_s)


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (VmHWM, VmRSS) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def run_worker(args: argparse.Namespace) -> int:
    """One implementation's timing in this process (``--isolate``). Libraries are imported and
    the model built first; then the resident high-water mark is reset (``echo 5 >
    /proc/self/clear_refs``), so VmHWM at the end is the peak resident memory of the trainer's
    set-up, reference pass and training (weights, gradients, optimizer state, activations)."""
    setup = prepare(args)
    if args.worker.startswith("trl"):
        import datasets  # noqa: F401
        import trl  # noqa: F401
    else:
        import lightning  # noqa: F401

        import podyn.training.dpo  # noqa: F401
    free_memory(args.device)
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_mb("VmRSS")
    if args.worker == "podyn":
        timing = time_ours(setup.pristine, setup.rows, setup.tokenizer, args, setup.settings, copy_model=False)
    else:
        timing = time_trl(
            setup.pristine,
            setup.rows,
            setup.tokenizer,
            args,
            setup.settings,
            precompute=args.worker == "trl",
            copy_model=False,
        )
    timing.peak_rss_mb = _status_mb("VmHWM")
    timing.rss_growth_mb = timing.peak_rss_mb - base
    (args.out / f"worker_{args.worker}.json").write_text(json.dumps(asdict(timing)) + "\n")
    return 0


def isolated_timings(args: argparse.Namespace, argv: list[str]) -> list[Timing]:
    """Each implementation timed by a subprocess of this script, one after the other."""
    import subprocess

    names = ([] if args.trl_only_precomputed else ["trl-ref"]) + ["trl", "podyn"]
    timings = []
    for name in names:
        subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                *argv,
                "--skip-parity",
                "--out",
                str(args.out),
                "--worker",
                name,
            ],
            check=True,
        )
        timings.append(Timing(**json.loads((args.out / f"worker_{name}.json").read_text())))
    return timings


def final_line(timings: list[Timing]) -> str:
    """``speedup <ratio> memory <ratio>``: podyn over TRL with precomputed reference log-probs;
    memory from the isolated subprocesses' peak RSS (CPU) or peak GPU memory."""
    trl = next(t for t in timings if t.implementation.startswith("TRL") and t.reference == "precomputed")
    ours = next(t for t in timings if t.implementation.startswith("podyn"))
    mem = {"rss": (ours.peak_rss_mb, trl.peak_rss_mb), "gpu": (ours.peak_gpu_mb, trl.peak_gpu_mb)}
    mine, theirs = mem["gpu"] if ours.peak_gpu_mb is not None else mem["rss"]
    memory = f"{mine / theirs:.2f}" if mine is not None and theirs else "n/a"
    return f"speedup {ours.pairs_per_s / trl.pairs_per_s:.2f} memory {memory}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    quiet_libraries()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        return run_worker(args)
    if args.hh_stats:
        print_hh_stats(args.hh_file, args.max_tokens, hh_tokenizer(args.hh_file, args.out / "hh_tokenizer.json"))
        return 0
    setup = prepare(args)
    settings, tokenizer, rows, pristine = setup.settings, setup.tokenizer, setup.rows, setup.pristine
    header = {
        "model": args.model_size,
        "data": args.data,
        "params_M": round(sum(p.numel() for p in pristine.parameters()) / 1e6, 1),
        "device": args.device,
        "pairs": args.pairs,
        "padded_len": setup.padded_len,
        "bf16": args.bf16,
        "gradient_checkpointing": args.gradient_checkpointing,
        "attn": args.attn,
        "beta": settings["beta"],
        "lr": settings["lr"],
        **environment(args),
    }
    print("settings: " + ", ".join(f"{k}={v}" for k, v in header.items()), flush=True)
    print(f"model built in {setup.build_s:.1f} s", flush=True)

    parity = None
    if not args.skip_parity:
        parity = check_parity(pristine, rows[: args.pairs], tokenizer, args, settings)
        print(format_parity(parity), flush=True)

    timings: list[Timing] = []
    if not args.skip_timing:
        if args.isolate:
            del setup, pristine
            timings = isolated_timings(args, argv)
        else:
            if not args.trl_only_precomputed:
                timings.append(time_trl(pristine, rows, tokenizer, args, settings, precompute=False))
            timings.append(time_trl(pristine, rows, tokenizer, args, settings, precompute=True))
            timings.append(time_ours(pristine, rows, tokenizer, args, settings))
        precision = "bf16 autocast" if args.bf16 else "float32"
        shape = (
            f"{args.pairs} pairs x {header['padded_len']} tokens"
            if args.data == "synthetic"
            else (
                f"{args.pairs} pairs per step, consecutive HH-RLHF batches (first padded to "
                f"{header['padded_len']} tokens)"
            )
        )
        print(f"\nDPO step time, {args.steps} timed steps after {args.warmup} warm-up, {shape}, {precision}:")
        print(format_timings(timings))
        print(TIMING_LEGEND)
        for t in timings:
            print(f"  {t.implementation} ({t.reference}): {t.details}")
    write_outputs(args.out, header, parity, timings)
    print(f"\nwritten to {args.out}")
    if timings:
        print(final_line(timings), flush=True)
    return 0 if parity is None or parity.passed else 1


if __name__ == "__main__":
    sys.exit(main())
