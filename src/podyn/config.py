"""The typed configuration: one pydantic model per config section, the ONE source of every
default and of every key's help text.

* :class:`Config` is the whole config. The Snakefile validates the user's config with
  :func:`validate_config` at start-up; ``podyn <stage> --config FILE`` does the same.
* A Snakemake rule passes a stage only the keys the stage reads (declared in
  :mod:`podyn.registry`), as JSON; the stage validates that excerpt against the same models
  restricted to those keys (:func:`excerpt_model`), so a stage never sees a raw dict.
* Errors name the config file and the key path: ``config.yaml: invalid value at 'dpo.beta': ...``.
* ``workflow/schemas/config.schema.yaml`` is generated from these models (documentation and
  editor completion); ``tests/test_config.py`` checks that the committed file is up to date.

How to add a config key
-----------------------
1. Add a field to the section's model below, with its default and help text:
   ``my_key: float = Field(0.5, gt=0, description="What it does; [choice] if the paper is silent.")``
   (a new section: a new ``Section`` subclass and a field of :class:`Config` with
   ``default_factory``).
2. Read it in stage code as ``cfg.<section>.my_key`` (never ``.get(key, fallback)``), and add
   the key (or its section) to the ``reads`` of every stage that reads it in
   :mod:`podyn.registry`; the rules pass what ``reads`` declares.
3. Regenerate the schema: ``.venv/bin/python -m podyn.config --write-schema``, and commit it.
4. Optionally set it in ``config.yaml`` (only where the embedded default differs from the
   model default) and regenerate config/README.md (python -m podyn.config_docs).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator
from pydantic.json_schema import GenerateJsonSchema

from .schedules import (
    PPO_FACTOR_KEYS,
    WEIGHT_KEYS,
    PPOFactors,
    WaveSpec,
    Weights,
    cdpo_weights,
    scale_steps,
    weight_at,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A malformed configuration; the message names the file and the offending key."""


class KeyPathError(ValueError):
    """A check across keys (raised inside validation) that names its own key path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


class Section(BaseModel):
    """Every section: unknown keys are errors, types are not coerced ("10" is not 10), NaN and
    infinities are refused, and the validated config is read-only."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True, allow_inf_nan=False)


# ----------------------------------------------------------------------------- data

Mix = dict[Literal["copy", "reverse", "sort"], float]


class SyntheticDataConfig(Section):
    """The embedded default's task: list transformations with a known gold reward."""

    n_sft: int = Field(8000, ge=1, description="SFT demonstrations.")
    n_pref_train: int = Field(4000, ge=1, description="Preference pairs for DPO, the reward model and PPO prompts.")
    n_pref_heldout: int = Field(500, ge=1, description="Held-out preference pairs (reward-model accuracy).")
    n_test: int = Field(256, ge=1, description="Test prompts (judged responses).")
    min_len: int = Field(3, ge=1, description="Shortest list in a prompt.")
    max_len: int = Field(6, ge=1, description="Longest list in a prompt.")
    train_mix: Mix = Field(
        default_factory=lambda: {"copy": 0.34, "reverse": 0.33, "sort": 0.33},
        description="Task families of the SFT and preference prompts, with relative frequencies.",
    )
    test_mix: Mix = Field(
        default_factory=lambda: {"copy": 0.2, "reverse": 0.4, "sort": 0.4},
        description="Task families of the test prompts (a different distribution, as HH-RLHF is to UltraFeedback).",
    )
    sft_lazy_prob: dict[Literal["copy", "reverse", "sort"], float] = Field(
        default_factory=lambda: {"copy": 0.0, "reverse": 0.7, "sort": 0.7},
        description="Per family, the probability that the SFT demonstrator copies the list instead of transforming it "
        "(a family not listed: 0).",
    )
    sft_token_noise: float = Field(
        0.05, ge=0, le=1, description="Probability that the SFT demonstrator replaces a word."
    )
    pref_lazy_prob_range: list[float] = Field(
        default_factory=lambda: [0.2, 0.9],
        min_length=2,
        max_length=2,
        description="Range of a preference demonstrator's lazy probability (drawn per response).",
    )
    pref_token_noise_range: list[float] = Field(
        default_factory=lambda: [0.0, 0.2],
        min_length=2,
        max_length=2,
        description="Range of a preference demonstrator's word-replacement probability (drawn per response).",
    )
    pref_length_noise: float = Field(
        0.3, ge=0, le=1, description="Probability that a preference demonstrator drops or adds one word."
    )
    bt_temperature: float = Field(0.1, gt=0, description="Bradley-Terry annotator noise.")
    length_penalty: float = Field(0.2, ge=0, description="Gold reward's penalty per missing or extra word.")

    @field_validator("sft_lazy_prob", "pref_lazy_prob_range", "pref_token_noise_range")
    @classmethod
    def _probabilities(cls, value):
        for p in value.values() if isinstance(value, dict) else value:
            if not 0 <= p <= 1:
                raise ValueError(f"{p} is not a probability in [0, 1]")
        if isinstance(value, list) and value[0] > value[1]:
            raise ValueError(f"{value} is not a range [low, high]")
        return value

    @field_validator("train_mix", "test_mix")
    @classmethod
    def _frequencies(cls, value):
        if any(f < 0 for f in value.values()) or sum(value.values()) <= 0:
            raise ValueError("relative frequencies must be >= 0, at least one of them > 0")
        return value

    @model_validator(mode="after")
    def _lengths(self) -> SyntheticDataConfig:
        if self.min_len > self.max_len:
            raise KeyPathError("min_len", f"{self.min_len} is longer than max_len {self.max_len}")
        return self


DataFormat = Literal["trl_standard", "trl_conversational", "ultrafeedback_binarized", "hh_rlhf"]


class DataRoleConfig(Section):
    """One split's source (hf and local data); unset keys come from the data section's top level."""

    path: str | None = Field(None, description="Dataset (hf) or file (local) of this role (null: data.path).")
    name: str | None = Field(None, description="hf: the dataset's configuration name (null: data.name).")
    data_dir: str | None = Field(None, description="hf: data_dir inside the dataset (null: data.data_dir).")
    split: str | None = Field(None, description="hf: the dataset split (local files have one).")
    format: DataFormat | None = Field(None, description="How rows map to prompt/chosen/rejected (null: data.format).")
    start: int = Field(0, ge=0, description="First row taken (in the seeded order).")
    n: int | None = Field(None, ge=1, description="Rows taken (null: all from start).")


class DataRolesConfig(Section):
    """Where each split comes from. The defaults are the paper's: UltraFeedback-binarized for SFT
    and preferences, HH-RLHF helpful-base test prompts."""

    sft: DataRoleConfig = Field(
        default_factory=lambda: DataRoleConfig(path=UF, split="train_sft", format="ultrafeedback_binarized"),
        description="SFT demonstrations (a preference format gives prompt + chosen).",
    )
    prefs_train: DataRoleConfig = Field(
        default_factory=lambda: DataRoleConfig(path=UF, split="train_prefs", format="ultrafeedback_binarized"),
        description="Preference pairs of DPO, the reward model and PPO's prompts.",
    )
    prefs_heldout: DataRoleConfig = Field(
        default_factory=lambda: DataRoleConfig(path=UF, split="test_prefs", format="ultrafeedback_binarized", n=1000),
        description="Held-out pairs (reward-model accuracy).",
    )
    test: DataRoleConfig = Field(
        default_factory=lambda: DataRoleConfig(
            path="Anthropic/hh-rlhf", data_dir="helpful-base", split="test", format="hh_rlhf", n=500
        ),
        description="Evaluation prompts.",
    )
    judge_prefs: DataRoleConfig | None = Field(
        None, description="Pairs of the reward-model judge (judge.type reward_model), disjoint from prefs_train."
    )


UF = "HuggingFaceH4/ultrafeedback_binarized"


class DataConfig(Section):
    source: Literal["synthetic", "hf", "local"] = Field(
        "synthetic",
        description="synthetic: the embedded task; hf: datasets.load_dataset (hub id or hub-like directory); "
        "local: your JSON-lines or Parquet files.",
    )
    synthetic: SyntheticDataConfig = Field(default_factory=SyntheticDataConfig)
    path: str | None = Field(
        None,
        description="hf: a dataset that datasets.load_dataset accepts (hub id or a directory laid out like a hub "
        "repo); local: a JSON-lines (.jsonl, .jsonl.gz) or Parquet file. Each role may set its own.",
    )
    name: str | None = Field(None, description="hf: the dataset's configuration name.")
    data_dir: str | None = Field(
        None, description="hf: the data_dir inside the dataset (helpful-base of Anthropic/hh-rlhf)."
    )
    format: DataFormat | None = Field(
        None, description="How rows map to prompt/chosen/rejected (src/podyn/data/formats.py)."
    )
    render: Literal["paper", "chat_template"] = Field(
        "paper",
        description="[choice] message lists as '\\n\\nHuman: ...\\n\\nAssistant:' (the paper's), or by the chat "
        "template of chat_template_from.",
    )
    chat_template_from: str | None = Field(
        None,
        description="Tokenizer (hub id or directory) whose chat template renders messages; null: model.name_or_path.",
    )
    on_bad_row: Literal["error", "drop"] = Field(
        "error",
        description="A bad row (missing field, empty response, chosen == rejected, malformed message list) stops with "
        "an error naming file, row and field, or is dropped and counted in the log.",
    )
    shuffle: bool = Field(
        True,
        description="Read every dataset in one order seeded by `seed` before taking each role's rows (roles on one "
        "dataset with disjoint start/n get disjoint rows).",
    )
    roles: DataRolesConfig = Field(default_factory=DataRolesConfig)


# ----------------------------------------------------------------------------- models and training


class ArchConfig(Section):
    """GPT-NeoX (Pythia) architecture of a model built from scratch."""

    hidden_size: int = Field(64, ge=1, description="Width of the residual stream.")
    num_layers: int = Field(2, ge=1, description="Transformer blocks.")
    num_heads: int = Field(2, ge=1, description="Attention heads.")
    intermediate_size: int | None = Field(None, ge=1, description="MLP width (null: 4 * hidden_size).")
    max_position_embeddings: int = Field(64, ge=1, description="Longest sequence.")
    rotary_pct: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Fraction of each head's dimensions that get rotary position embeddings "
        "(Pythia: 0.25; tiny heads need more).",
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ArchConfig:
        if self.hidden_size % self.num_heads:
            raise KeyPathError("num_heads", f"{self.num_heads} heads do not divide hidden_size {self.hidden_size}")
        return self


class BuildCheckpointConfig(Section):
    size: Literal["14m", "31m", "70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b"] = Field(
        description="Pythia size whose architecture hyper-parameters are used."
    )
    tokenizer: str | None = Field(
        None,
        description="A tokenizer (hub id or directory) to use; null trains a byte-level BPE on the training text.",
    )
    bpe_vocab_size: int = Field(8192, ge=1, description="Vocabulary of the trained BPE tokenizer.")
    bpe_min_frequency: int = Field(2, ge=1, description="Least frequency of a BPE merge.")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="GPTNeoXConfig keys replacing the size's values (vocab_size, num_hidden_layers).",
    )


class ModelConfig(Section):
    init: Literal["scratch", "pretrained"] = Field(
        "scratch", description="Build a tiny model, or load `name_or_path` (a hub id or an HF model directory)."
    )
    name_or_path: str = Field("EleutherAI/pythia-2.8b", description="Hub name or local path of a pretrained model.")
    arch: ArchConfig = Field(default_factory=ArchConfig)
    dtype: Literal["float32", "bfloat16", "float16", "float64"] = Field("float32", description="Parameter dtype.")
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] = Field(
        "eager", description="transformers' attention kernel."
    )
    build_checkpoint: BuildCheckpointConfig | None = Field(
        None,
        description="Build model.name_or_path before base_model (the local_checkpoint rule): a randomly initialised "
        "Pythia-architecture GPT-NeoX and a tokenizer, saved as an HF model directory that model.init pretrained "
        "then loads like a hub checkpoint.",
    )


class TrainerConfig(Section):
    """Lightning Trainer settings shared by every stage."""

    accelerator: str = Field("cpu", description="Lightning accelerator (cpu, gpu, auto).")
    devices: int | str = Field(
        1,
        description="Devices (processes) per training stage. With more than one, every process draws its share of "
        "the same global batch (batch sizes are global and must divide evenly); needs strategy ddp or fsdp.",
    )
    strategy: Literal["auto", "ddp", "fsdp"] = Field(
        "auto",
        description="Lightning strategy: auto (one process), ddp (data parallel; SFT, reward model, DPO and PPO) or "
        "fsdp (sharded parameters, gradients and optimiser state; SFT, reward model and DPO).",
    )
    fsdp_sharding: Literal["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"] = Field(
        "FULL_SHARD", description="FSDP sharding strategy (strategy fsdp only)."
    )
    fsdp_activation_checkpointing: bool = Field(
        False, description="Recompute each transformer layer's activations in the backward pass (strategy fsdp only)."
    )
    fsdp_cpu_offload: bool = Field(
        False, description="Keep FSDP's parameter shards in CPU memory (strategy fsdp only)."
    )
    precision: str = Field("32-true", description="Lightning precision (32-true, bf16-mixed, ...).")
    log_every_n_steps: int = Field(10, ge=1, description="Metrics logging interval.")
    checkpoint_every_n_steps: int = Field(50, ge=1, description="Lightning resume checkpoints.")
    deterministic: bool = Field(False, description="torch deterministic algorithms.")
    progress_refresh: int = Field(20, ge=1, description="Progress-bar refresh interval (steps).")
    logps_chunk_tokens: int = Field(
        0,
        ge=0,
        description="DPO training and reference log-probs: apply the output head only at response positions, this"
        " many tokens at a time, recomputed in backward (0: the plain full-logits computation). Saves the"
        " (tokens x vocab) float32 logits; pays off with a large vocabulary.",
    )
    pack_sequences: bool = Field(
        False,
        description="DPO training and reference log-probs: concatenate a batch's rows into one sequence without"
        " padding (positions restart per row, attention kept within rows), so no compute goes to padding.",
    )


class GenerationConfig(Section):
    max_new_tokens: int = Field(
        8, ge=1, description="[choice] longest generated response; also the length of D' responses."
    )
    max_prompt_tokens: int | None = Field(None, description="Prompts are cut to their last N tokens (null: no limit).")
    max_response_tokens: int | None = Field(
        None, description="Training responses are cut to N tokens (null: no limit)."
    )
    eval_batch_size: int = Field(128, ge=1, description="Prompts per generation batch.")


class SupervisedConfig(Section):
    """SFT and the reward model: AdamW, linear warm-up, then `lr_schedule`."""

    lr: float = Field(1.0e-3, gt=0, description="Learning rate.")
    batch_size: int = Field(64, ge=1, description="Rows (SFT) or pairs (reward model) per step.")
    max_steps: int = Field(1000, ge=1, description="Optimiser steps.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="After warm-up: constant, or cosine decay to 0."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float | None = Field(
        None, gt=0, description="Clip the gradient to this L2 norm before each step (null: no clipping)."
    )


class DPOConfig(Section):
    """DPO and its component-weighted variants (ablations, cDPO)."""

    beta: float = Field(0.1, gt=0, description="beta of the DPO loss.")
    lr: float = Field(1.0e-4, gt=0, description="Learning rate.")
    batch_size: int = Field(64, ge=1, description="Preference pairs per step (also the reference log-prob batch).")
    max_steps: int = Field(300, ge=1, description="Optimiser steps.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="After warm-up: constant, or cosine decay to 0."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    checkpoint_every: int = Field(
        30, ge=0, description="Analysis checkpoints (weights + batch) every K steps; 0 = none."
    )
    eval_every: int = Field(30, ge=0, description="Judge the policy every K steps (the final step is always judged).")
    step_scale: float = Field(
        1.0, gt=0, description="[choice] Multiplies every step-valued schedule key (the paper's steps)."
    )
    max_grad_norm: float | None = Field(
        None, gt=0, description="Clip the gradient to this L2 norm before each step (null: no clipping)."
    )
    disable_dropout: bool = Field(
        True,
        description="[choice] Zero the policy's dropout probabilities, as TRL and the DPO paper's code do: "
        "the reference log-probs are computed without dropout, so with it the implicit reward would not "
        "start at 0 and every step's loss, G probe and controller reading would carry dropout noise.",
    )


class PPOConfig(Section):
    """RLHF PPO and its component-weighted variants (ablations, cPPO, hPPO)."""

    lr: float = Field(1.0e-4, gt=0, description="Policy learning rate.")
    value_lr: float = Field(1.0e-3, gt=0, description="Value-model learning rate.")
    rollout_batch_size: int = Field(64, ge=1, description="Prompts per iteration (rollout batch).")
    mini_batch_size: int = Field(32, ge=1, description="Rollouts per optimiser step.")
    ppo_epochs: int = Field(2, ge=1, description="Passes over each rollout batch.")
    iterations: int = Field(
        100, ge=1, description="PPO iterations (rollout batches); a training step is one iteration."
    )
    kl_coef: float = Field(0.05, ge=0, description="Per-token KL penalty to the reference.")
    gamma: float = Field(1.0, ge=0, le=1, description="GAE discount.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda.")
    clip_eps: float = Field(0.2, gt=0, description="Policy ratio clip range.")
    cliprange_value: float = Field(0.2, gt=0, description="Value clip range.")
    vf_coef: float = Field(0.1, ge=0, description="Value-loss coefficient.")
    temperature: float = Field(
        1.0,
        gt=0,
        description="Rollout sampling temperature T; the old, reference and trained log-probs are all of "
        "softmax(logits / T).",
    )
    kl_estimator: Literal["k1", "k3"] = Field(
        "k1",
        description="Per-token KL penalty: k1 = logp - logp_ref; k3 = (r - 1) - log r with r = p_ref / p "
        "(never negative).",
    )
    old_logps: Literal["recompute", "generation"] = Field(
        "recompute",
        description="pi_old of each rollout token: recompute (one forward pass over the sampled sequences with the "
        "code of the trained log-probs, so rho = 1 exactly before the first update) or generation (the sampling "
        "pass's own scores, KV-cached and incremental: one forward pass fewer per iteration, rho = 1 only to the "
        "precision's round-off, as TRL; refused for a model whose generation_config adds logits processors).",
    )
    normalize_reward: bool = Field(
        False,
        description="Rescale the reward model's score by a gain and bias fitted on SFT-policy rollouts before "
        "training (lm-human-preferences).",
    )
    reward_norm_prompts: int = Field(
        256, ge=1, description="Training prompts rolled out by the SFT policy to fit the reward normalisation."
    )
    reward_norm_mean: float = Field(0.0, description="Mean of the normalised score on SFT rollouts.")
    reward_norm_std: float = Field(
        1.0, gt=0, description="Standard deviation of the normalised score on SFT rollouts."
    )
    lr_schedule: Literal["constant", "linear"] = Field(
        "constant",
        description="PPO learning rate: constant, or decayed linearly to lr / iterations at the last iteration "
        "(stepped once per iteration).",
    )
    missing_eos_penalty: float = Field(
        1.0, ge=0, description="[choice] Subtracted from the score of a response cut at max_new_tokens without EOS."
    )
    max_grad_norm: float | None = Field(1.0, description="Gradient clipping norm (null: none).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    checkpoint_every: int = Field(10, ge=0, description="Analysis checkpoints every K iterations; 0 = none.")
    eval_every: int = Field(
        10, ge=0, description="Judge the policy every K iterations (the final one is always judged)."
    )
    step_scale: float = Field(
        1.0, gt=0, description="[choice] Multiplies every step-valued schedule key (the paper's steps)."
    )


OBJECTIVES: dict[str, type[Section]] = {"dpo": DPOConfig, "ppo": PPOConfig}


class CdpoConfig(Section):
    """cDPO (method.md §5): POS/NEG weights from (t1, t2), in the paper's steps (scaled by step_scale)."""

    t1: float = Field(ge=0, description="End of the POS-emphasised phase (the paper's steps).")
    t2: float = Field(ge=0, description="Start of the NEG-emphasised phase (the paper's steps).")
    reading: Literal["piecewise", "linear"] = Field(
        "piecewise", description="[choice] piecewise (POS only, both, NEG only) or a linear blend."
    )
    rho: float = Field(
        0.0, ge=0, le=1, description="[choice] floor of the de-emphasised component: 0 is the hard reading."
    )

    @model_validator(mode="after")
    def _phases_in_order(self) -> CdpoConfig:
        if self.t1 > self.t2 or (self.reading == "linear" and self.t1 == self.t2):
            relation = "before" if self.reading == "piecewise" else "strictly before"
            raise KeyPathError("t2", f"t1 ({self.t1}) must come {relation} t2 ({self.t2})")
        return self


class ControllerConfig(Section):
    """Coordinated PO in real time (method.md §9): weights steered by G measured while training."""

    steer: list[Literal["pos", "neg", "top", "mid", "bot"]] | None = Field(
        None, min_length=1, description="Steered components (null: DPO steers pos, neg; PPO top, mid, bot)."
    )
    k: int = Field(10, ge=1, description="Measure G and update the weights every k steps (PPO iterations).")
    eta: float = Field(
        0.1,
        ge=0,
        description="Step size of w_c <- clip(w_c exp(eta G_c / sum_j |G_j|), w_min, w_max); 0 is the baseline.",
    )
    w_min: float = Field(0.25, ge=0, description="Smallest weight the controller may set.")
    w_max: float = Field(2.0, gt=0, description="Largest weight the controller may set.")
    proxy: Literal["policy_greedy", "heldout_chosen"] = Field(
        "policy_greedy",
        description="[choice] D'_t: the current policy's greedy responses to held-out training prompts, "
        "or their chosen responses.",
    )
    n_prompts: int = Field(32, ge=1, description="Held-out training prompts in D'_t (test prompts are never used).")
    method: Literal["jvp", "finite_difference"] = Field(
        "finite_difference", description="Directional derivatives by forward-mode AD or a central finite difference."
    )
    fd_eps: float = Field(1.0e-3, gt=0, description="Finite-difference step as a length in parameter space.")

    @model_validator(mode="after")
    def _weight_bounds(self) -> ControllerConfig:
        if self.w_min > self.w_max:
            raise KeyPathError("w_max", f"{self.w_max} is below w_min {self.w_min}")
        return self


class RunConfig(Section):
    """One preference-optimization run: an objective plus component-weight schedules."""

    objective: Literal["dpo", "ppo"] = Field(description="The objective; its section holds the hyper-parameters.")
    label: str | None = Field(None, description="Legend label in figures (null: the run's name).")
    weights: Weights = Field(
        default_factory=Weights, description="Component-weight schedules (see src/podyn/schedules.py)."
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Keys of the objective's section overridden for this run (validated as that section).",
    )
    cdpo: CdpoConfig | None = Field(
        None, description="cDPO's POS/NEG weights from (t1, t2) and its reading; explicit `weights` entries win."
    )
    controller: ControllerConfig | None = Field(
        None, description="Coordinated PO: the weights are steered by G measured while training (null: none)."
    )
    ppo_factors: PPOFactors = Field(
        default_factory=PPOFactors,
        description="PPO only: multipliers of ppo.clip_eps and ppo.kl_coef by iteration, as weight specs (hPPO's "
        "other targets, method.md §5).",
    )

    @model_validator(mode="after")
    def _factors_need_ppo(self) -> RunConfig:
        if self.objective != "ppo" and any(getattr(self.ppo_factors, k) is not None for k in PPO_FACTOR_KEYS):
            raise KeyPathError("ppo_factors", "multiplies PPO hyper-parameters: the run's objective is not 'ppo'")
        return self


# ----------------------------------------------------------------------------- evaluation and analysis


class JudgeConfig(Section):
    """Who judges win rates against the SFT model (method.md §6; README: "The LLM judge")."""

    type: Literal["gold", "openai", "reward_model"] = Field(
        "gold",
        description="gold: the synthetic task's known reward; "
        "openai: an LLM behind any OpenAI-compatible chat-completions endpoint; "
        "reward_model: a separate reward model trained on data.roles.judge_prefs (a proxy for human judgement).",
    )
    missing_eos_penalty: float = Field(
        1.0, ge=0, description="Reward-model judge: subtracted from the score of a response cut at max_new_tokens."
    )
    tie_margin: float = Field(1.0e-9, ge=0, description="Gold judge: |r*(a) - r*(b)| <= margin is a tie.")
    model: str = Field("gpt-4", description="LLM judge's model name.")
    base_url: str | None = Field(
        None, description="API root of an OpenAI-compatible endpoint (a vLLM server, a proxy); null: OpenAI's."
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="Name of the environment variable holding the API key (never the key itself)."
    )
    template: Literal["dpo", "weighted"] = Field(
        "dpo",
        description="[choice] dpo: the DPO paper's GPT-4 prompt, a hard A/B verdict; "
        "weighted: a single-token verdict scored by its probability (AlpacaEval 2's manner).",
    )
    order: Literal["both", "random"] = Field(
        "both",
        description="[choice] both: ask in both orders, an inconsistent pair is a tie; "
        "random: ask once, in an order drawn from a seeded hash of the prompt.",
    )
    order_seed: int = Field(0, description="Seed of the hash that draws the order when order is random.")
    temperature: float = Field(0.0, ge=0, description="LLM judge's sampling temperature.")
    max_tokens: int | None = Field(
        None, ge=1, description="Reply length limit for the dpo template (null: the endpoint's); weighted asks for 1."
    )
    top_logprobs: int = Field(5, ge=2, le=20, description="Weighted template: alternatives of the verdict token read.")
    concurrency: int = Field(8, ge=1, description="Requests in flight per judging job; results do not depend on it.")
    timeout: float = Field(60.0, gt=0, description="Seconds before a request is abandoned and retried.")
    max_retries: int = Field(
        5, ge=0, description="Retries after a 429, 5xx, timeout, dropped connection or malformed reply."
    )
    parse_retries: int = Field(2, ge=0, description="Retries of a request whose reply has no verdict.")
    backoff_base: float = Field(
        1.0, ge=0, description="Seconds before the first retry, doubled at each retry, with jitter (Retry-After wins)."
    )
    backoff_max: float = Field(60.0, ge=0, description="Longest backoff between retries, in seconds.")
    max_calls: int | None = Field(
        None, ge=0, description="Most requests a judging job may send (retries count); it stops before exceeding it."
    )
    max_invalid_fraction: float = Field(
        0.05, ge=0, le=1, description="A judging job fails when more than this share of its comparisons is invalid."
    )


class WinrateConfig(Section):
    bootstrap_samples: int = Field(2000, ge=1, description="Bootstrap resamples of every confidence interval.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence level of every interval.")
    power: float = Field(
        0.8, gt=0, lt=1, description="Power at which each comparison's minimum detectable effect (mde) is computed."
    )


class DynamicsConfig(Section):
    """Gradient alignment G at analysis checkpoints (docs/method.md §1)."""

    runs: list[str] = Field(default_factory=lambda: ["dpo", "ppo"], description="Runs whose dynamics are computed.")
    n_prompts: int = Field(64, ge=1, description="[choice] number of evaluation prompts in D'.")
    decoding: Literal["greedy", "sample"] = Field("greedy", description="[choice] how the final policy generates D'.")
    method: Literal["jvp", "finite_difference", "direct"] = Field(
        "finite_difference",
        description="Directional derivatives by forward-mode AD, by a central finite difference along gbar, "
        "or the direct reference (a backward pass per component).",
    )
    fd_eps: float = Field(
        1.0e-3, gt=0, description="Finite-difference step as a length in parameter space (h = fd_eps / |gbar|)."
    )
    dtype: Literal["float32", "float64", "bfloat16"] = Field(
        "float32",
        description="dtype of the analysis. bfloat16 only with method jvp or direct: a central difference in "
        "bfloat16 loses G (relative error about 1 against float64, measured on an H200 and on the CPU).",
    )
    chunk_rows: int | None = Field(None, description="Sequences per forward-mode pass (memory bound on large models).")
    per_layer: bool = Field(False, description="Also report G restricted to each layer's parameters.")
    dpo_batch: Literal["recorded", "fixed"] = Field(
        "recorded", description="[choice] DPO's B: the step's training batch, or a fixed larger analysis batch."
    )
    dpo_fixed_batch_size: int = Field(256, ge=1, description="Size of the fixed analysis batch.")
    ppo_old_logps: Literal["recompute", "recorded"] = Field(
        "recompute",
        description="[choice] PPO's pi_old in G: the checkpoint's own log-probs in the analysis dtype (rho = 1 "
        "exactly, as theta = theta_old at that step), or the rollout's recorded ones (off by the training "
        "precision's round-off).",
    )

    @model_validator(mode="after")
    def _difference_needs_precision(self) -> DynamicsConfig:
        if self.dtype == "bfloat16" and self.method == "finite_difference":
            raise ValueError(
                "dynamics.dtype bfloat16 with dynamics.method finite_difference: the central difference's "
                "rounding error swamps G in bfloat16; use dtype float32 or method jvp/direct"
            )
        return self


class AblationPanel(Section):
    """One panel of figure 4: a baseline run and the variants drawn beside it and compared with it."""

    title: str = Field(description="Panel title.")
    baseline: str = Field(description="The baseline run.")
    runs: list[str] = Field(description="The variants drawn beside it.")
    paper_claim: bool = Field(
        True, description="The panel tests a claim of the paper (false: podyn's own, e.g. Coordinated PO)."
    )


def _default_panels() -> dict[str, AblationPanel]:
    return {
        "a": AblationPanel(title="DPO ablations", baseline="dpo", runs=["dpo_wo_neg_early", "dpo_wo_pos_late"]),
        "b": AblationPanel(title="PPO ablations", baseline="ppo", runs=["ppo_wo_top", "ppo_wo_mid"]),
        "c": AblationPanel(title="cDPO", baseline="dpo", runs=["cdpo_1", "cdpo_2", "cdpo_3"]),
        "d": AblationPanel(title="cPPO-top", baseline="ppo", runs=["cppo_top_1", "cppo_top_2", "cppo_top_3"]),
        "e": AblationPanel(title="cPPO-mid", baseline="ppo", runs=["cppo_mid_1", "cppo_mid_2", "cppo_mid_3"]),
        "f": AblationPanel(title="hPPO", baseline="ppo", runs=["hppo_1", "hppo_2", "hppo_3"]),
        "g": AblationPanel(title="Coordinated PO (DPO)", baseline="dpo", runs=["copo_dpo"], paper_claim=False),
        "h": AblationPanel(title="Coordinated PO (PPO)", baseline="ppo", runs=["copo_ppo"], paper_claim=False),
    }


class FiguresConfig(Section):
    dpo_run: str = Field("dpo", description="The run drawn as DPO in figures 1 and 5.")
    ppo_run: str = Field("ppo", description="The run drawn as PPO in figures 2, 3 and 5.")
    formats: list[Literal["png", "pdf", "svg"]] = Field(
        default_factory=lambda: ["png", "pdf"], description="File formats of every figure."
    )
    symlog_linthresh: float | None = Field(
        None, description="[choice] linear range of the symmetric-log G axis (null: 10th percentile of |G|)."
    )
    style: str = Field("whitegrid", description="seaborn style.")
    ablation_panels: dict[str, AblationPanel] = Field(
        default_factory=_default_panels, description="Figure 4's panels, each a baseline run beside its variants."
    )


class ClaimsConfig(Section):
    """Thresholds of the paper-claims report, fixed before looking at the data."""

    stable_fraction: float = Field(
        0.7, description="DPO is stable if at least this fraction of its checkpoints have G(TOT) > 0."
    )
    offset_fraction: float = Field(
        0.5, description="POS and NEG offset if at least this fraction of checkpoints have opposite signs."
    )
    joint_share_range: list[float] = Field(
        default_factory=lambda: [0.2, 0.8],
        min_length=2,
        max_length=2,
        description="POS and NEG shape the targets jointly if NEG's median share of |G| lies in this range.",
    )
    group_spread: float = Field(
        0.1, description="TOP/MID/BOT differ if their mean shares of |G| spread at least this much."
    )


class RobustnessSetting(Section):
    """One setting of the claim robustness map: a DPO run and a PPO run, both with dynamics."""

    dpo: str = Field(description="The setting's DPO run (a run under `runs`, listed in `dynamics.runs`).")
    ppo: str = Field(description="The setting's PPO run (a run under `runs`, listed in `dynamics.runs`).")


class RobustnessConfig(Section):
    """Claim robustness map (config/claims-robustness.yaml): each setting pairs a DPO run with a PPO run."""

    settings: dict[str, RobustnessSetting] = Field(
        default_factory=dict, description="Setting name -> its DPO and PPO runs (empty: no robustness map)."
    )


# ----------------------------------------------------------------------------- the whole config


def _default_runs() -> dict[str, RunConfig]:
    return {"dpo": RunConfig(objective="dpo", label="DPO"), "ppo": RunConfig(objective="ppo", label="PPO")}


class Config(Section):
    """podyn configuration. Every key has a default; an unknown or malformed key is an error
    that names the key. Keys marked [choice] are where the paper is silent and the method
    fixed an interpretation (the default is that choice)."""

    experiment: str = Field(
        "default", pattern=r"^[A-Za-z0-9_.-]+$", description="Results go to <results_dir>/<experiment>/."
    )
    results_dir: str = Field("results", description="Root of every output.")
    seed: int = Field(0, description="Seed of data generation, initialisation, SFT and reward model.")
    seeds: list[int] = Field(
        default_factory=lambda: [0], min_length=1, description="One preference-optimization run per seed."
    )
    threads: int = Field(1, ge=1, description="torch threads per job.")
    warm_start: bool = Field(
        True,
        description="Local runs on Linux: fork each job from a process that has imported torch, transformers "
        "and Lightning once, instead of importing them in every job (5 to 8 s each). Outputs are identical; "
        "cluster runs never do.",
    )
    select: list[str] | None = Field(None, description="Train only these runs (null: all of `runs`).")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    sft: SupervisedConfig = Field(default_factory=SupervisedConfig, description="Supervised fine-tuning.")
    reward_model: SupervisedConfig = Field(default_factory=SupervisedConfig, description="Bradley-Terry reward model.")
    dpo: DPOConfig = Field(default_factory=DPOConfig)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    runs: dict[str, RunConfig] = Field(
        default_factory=_default_runs,
        min_length=1,
        description="The runs: name -> objective, component-weight schedules, overrides.",
    )
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    dynamics: DynamicsConfig = Field(default_factory=DynamicsConfig)
    figures: FiguresConfig = Field(default_factory=FiguresConfig)
    claims: ClaimsConfig = Field(default_factory=ClaimsConfig)
    winrate: WinrateConfig = Field(default_factory=WinrateConfig)
    robustness: RobustnessConfig = Field(default_factory=RobustnessConfig)

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds_from_command_line(cls, value):
        """``snakemake --config seeds=[0,1,2]`` hands over the items as strings."""
        if isinstance(value, list):
            return [int(s) if isinstance(s, str) and s.strip().lstrip("-").isdigit() else s for s in value]
        return value

    @field_validator("runs")
    @classmethod
    def _run_names(cls, runs):
        for name in runs:
            if not name.replace("_", "").isalnum() or not name.isascii():
                raise KeyPathError(f"runs.{name}", "a run name has only letters, digits and underscores")
        return runs

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        for name, run in self.runs.items():
            section = OBJECTIVES[run.objective]
            for key in run.overrides:
                if key not in section.model_fields:
                    raise KeyPathError(f"runs.{name}.overrides.{key}", f"not a key of '{run.objective}'")
            try:
                section.model_validate({**getattr(self, run.objective).model_dump(by_alias=True), **run.overrides})
            except ValidationError as err:
                first = err.errors(include_url=False)[0]
                path, message = _describe(first)
                raise KeyPathError(f"runs.{name}.overrides.{path}", message) from None
        for name, setting in self.robustness.settings.items():
            for objective in ("dpo", "ppo"):
                run = getattr(setting, objective)
                where = f"robustness.settings.{name}.{objective}"
                if run not in self.runs or self.runs[run].objective != objective:
                    raise KeyPathError(where, f"{run!r} is not a {objective} run under 'runs'")
                if run not in self.dynamics.runs:
                    raise KeyPathError(where, f"add {run!r} to 'dynamics.runs'")
        for name in self.select or []:
            if name not in self.runs:
                raise KeyPathError("select", f"run {name!r} is not defined under 'runs'")
        if self.judge.type == "reward_model" and (
            self.data.source == "synthetic" or self.data.roles.judge_prefs is None
        ):
            raise KeyPathError("judge.type", "'reward_model' needs data.roles.judge_prefs (hf or local data)")
        self._check_data_roles()
        for name in selected_runs(self):
            _check_run_schedules(self, name)
        if self.model.build_checkpoint is not None and self.model.init != "pretrained":
            raise KeyPathError("model.build_checkpoint", "the built checkpoint is loaded by model.init 'pretrained'")
        return self

    def _check_data_roles(self) -> None:
        """With your own data (``local``, or ``hf`` with ``data.path``), every role is given: a role
        left out would take its default, one of the paper's datasets, and read it instead of yours."""
        if not (self.data.source == "local" or (self.data.source == "hf" and self.data.path is not None)):
            return
        for role in ("sft", "prefs_train", "prefs_heldout", "test"):
            if role not in self.data.roles.model_fields_set:
                raise KeyPathError(
                    f"data.roles.{role}",
                    f"not set: with your own data (data.source {self.data.source!r}) give every role (sft, "
                    "prefs_train, prefs_heldout, test) its rows, e.g. {start: 0, n: 1000}; "
                    "left out, it would read the paper's dataset",
                )


def _check_run_schedules(cfg: Config, name: str) -> None:
    """Schedules checked over the steps the run takes: a wave weight (hPPO) still varies (method.md
    §5: no case may reduce to the baseline; step_scale can shrink a period to a whole fraction of a
    step, which gives one weight at every step), and ``ppo_factors`` keep the clip range above 0 and
    the KL coefficient at or above 0."""
    resolved = resolve_run(cfg, name)
    hyper = resolved.hyper
    steps = hyper.iterations if resolved.objective == "ppo" else hyper.max_steps
    schedules = {f"weights.{k}": getattr(resolved.weights, k) for k in WEIGHT_KEYS}
    schedules |= {f"ppo_factors.{k}": getattr(resolved.ppo_factors, k) for k in PPO_FACTOR_KEYS}
    for key, spec in schedules.items():
        factor = key.removeprefix("ppo_factors.") if key.startswith("ppo_factors.") else None
        wave = next(_waves(spec), None)
        if spec is None or (factor is None and wave is None):
            continue
        values = [weight_at(spec, t) for t in range(steps)]  # once per schedule, for both checks
        low = min(values)
        if factor is not None and (low < 0 or (factor == "clip_eps" and low == 0)):
            bound = "> 0" if factor == "clip_eps" else ">= 0"
            raise KeyPathError(
                f"runs.{name}.{key}",
                f"makes ppo.{factor} {getattr(hyper, factor) * low:g} at step {values.index(low)}; "
                f"it must stay {bound}",
            )
        weights = {round(value, 12) for value in values}
        if wave is not None and steps >= 2 and len(weights) == 1:
            raise KeyPathError(
                f"runs.{name}.{key}",
                f"the wave gives the same weight {weights.pop():g} at each of the run's {steps} steps (period "
                f"{wave.wave.period:g} steps after step_scale {hyper.step_scale:g}, amplitude "
                f"{wave.wave.amplitude:g}); it needs a nonzero amplitude and a period that is not a whole fraction "
                "of a step",
            )


def _waves(spec: Any) -> Iterator[WaveSpec]:
    """The wave specs in a weight spec (products nest)."""
    if isinstance(spec, WaveSpec):
        yield spec
    elif isinstance(spec, list):
        for part in spec:
            yield from _waves(part)


def check_workflow_runs(cfg: Config, source: str = "config") -> None:
    """What the workflow needs of the run names, beyond a valid config (a config for one stage may
    hold fewer runs): the runs of ``dynamics.runs`` exist, and figures 1, 2, 3 and 5 have their DPO
    and PPO runs among the selected ones."""
    for name in cfg.dynamics.runs:
        if name not in cfg.runs:
            raise ConfigError(invalid_value(source, "dynamics.runs", f"run {name!r} is not defined under 'runs'"))
    for objective in ("dpo", "ppo"):
        key, name = f"figures.{objective}_run", getattr(cfg.figures, f"{objective}_run")
        if name not in cfg.runs or cfg.runs[name].objective != objective:
            raise ConfigError(invalid_value(source, key, f"{name!r} is not a {objective} run under 'runs'"))
        if name not in selected_runs(cfg):
            raise ConfigError(invalid_value(source, key, f"run {name!r} is not in 'select'"))


def selected_runs(cfg: Config) -> list[str]:
    """The runs to train: ``select``, else every run."""
    return list(cfg.runs) if cfg.select is None else list(cfg.select)


def results_root(cfg: Config) -> Path:
    return Path(cfg.results_dir) / cfg.experiment


@dataclass(frozen=True)
class ResolvedRun:
    """A run ready to train: its objective's section with the run's overrides (``hyper``) and
    its weight schedules with step-valued keys multiplied by ``hyper.step_scale``."""

    name: str
    objective: str
    hyper: DPOConfig | PPOConfig
    weights: Weights
    label: str = ""
    controller: ControllerConfig | None = None
    ppo_factors: PPOFactors = field(default_factory=PPOFactors)


def resolve_run(cfg: Any, name: str) -> ResolvedRun:
    """``cfg`` is a :class:`Config` or a stage's excerpt holding ``runs.<name>`` and its objective's section."""
    if name not in cfg.runs:
        raise ConfigError(f"run {name!r} is not defined under 'runs' (defined: {', '.join(cfg.runs)})")
    run = cfg.runs[name]
    section = getattr(cfg, run.objective)
    try:
        hyper = OBJECTIVES[run.objective].model_validate({**section.model_dump(by_alias=True), **run.overrides})
    except ValidationError as err:
        raise ConfigError(format_errors(err, f"runs.{name}.overrides")) from None
    weights = run.weights
    cdpo = getattr(run, "cdpo", None)
    if cdpo is not None:  # cDPO's (t1, t2) with its reading; explicit `weights` entries win
        expanded = cdpo_weights(cdpo.t1, cdpo.t2, cdpo.reading, cdpo.rho)
        explicit = {k: getattr(weights, k) for k in WEIGHT_KEYS if getattr(weights, k) is not None}
        weights = expanded.model_copy(update=explicit)
    return ResolvedRun(
        name=name,
        objective=run.objective,
        hyper=hyper,
        weights=scale_steps(weights, hyper.step_scale),
        label=getattr(run, "label", None) or name,
        controller=getattr(run, "controller", None),
        ppo_factors=getattr(run, "ppo_factors", PPOFactors()).scaled(hyper.step_scale),
    )


# ----------------------------------------------------------------------------- errors


def _describe(error: dict[str, Any]) -> tuple[str, str]:
    """(key path, message) of one pydantic error. Unknown and missing keys are reported at
    the mapping that holds them; the union tags of weight specs are left out of the path."""
    ctx_error = (error.get("ctx") or {}).get("error")
    loc = [str(p) for p in error["loc"] if not (isinstance(p, str) and p.startswith("<") and p.endswith(">"))]
    if isinstance(ctx_error, KeyPathError):  # its path is relative to the section that raised it
        where, path = ".".join(loc), ctx_error.path
        if where and path != where and not path.startswith(where + "."):
            path = f"{where}.{path}"
        return path, ctx_error.message
    kind, message = error["type"], error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return ".".join(loc[:-1]) or "<top level>", f"unknown key '{loc[-1]}'"
    if kind == "missing":
        return ".".join(loc[:-1]) or "<top level>", f"missing required key '{loc[-1]}'"
    if loc and loc[-1] == "[key]":
        return ".".join(loc[:-2]) or "<top level>", f"key {error['input']!r}: {message}"
    return ".".join(loc) or "<top level>", f"{message}, got {error['input']!r}"


def format_errors(err: ValidationError, source: str) -> str:
    """One line per error: ``<source>: invalid value at '<key path>': <message>``."""
    lines = dict.fromkeys(invalid_value(source, *_describe(e)) for e in err.errors(include_url=False))
    return "\n".join(lines)


def invalid_value(source: str, path: str, message: str) -> str:
    """The one form of every config error: ``<source>: invalid value at '<key path>': <message>``."""
    return f"{source}: invalid value at '{path}': {message}"


def validate_config(raw: dict[str, Any], source: str = "config") -> Config:
    """The typed config of a whole config mapping; raise :class:`ConfigError` naming the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: plain YAML keeps the last
    one, so a second ``dpo:`` block would silently drop every setting of the first."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be overridden
            continue
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, str | int | float | bool) and key in first_line:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice (first on line {first_line[key]})", key_node.start_mark
            )
        first_line[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's mapping; a missing file, invalid YAML or a repeated key is a ConfigError."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        with path.open() as handle:  # a stream, so that error marks name the file
            raw = yaml.load(handle, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def load_config(path: str | Path) -> Config:
    """The typed config of a whole YAML/JSON config file (defaults filled in)."""
    return validate_config(read_yaml(path), str(path))


# ----------------------------------------------------------------------------- excerpts


def _split(paths: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for path in paths:
        head, _, rest = path.partition(".")
        groups.setdefault(head, []).append(rest)
    return groups


def _restricted(model: type[BaseModel], paths: list[str]) -> type[BaseModel]:
    """``model`` with only the fields (and sub-fields) named by dotted ``paths``. A path
    element under a mapping field (``runs.<name>``) selects a key: the excerpt's mapping holds
    values of the restricted value model."""
    fields: dict[str, Any] = {}
    for name, rests in _split(paths).items():
        if name not in model.model_fields:
            raise KeyError(f"{model.__name__} has no key {name!r}")
        info = model.model_fields[name]
        if "" in rests:
            fields[name] = (info.annotation, info)
            continue
        annotation = info.annotation
        if getattr(annotation, "__origin__", None) is dict:
            _, value_type = annotation.__args__
            sub = _restricted(value_type, [rest.partition(".")[2] or "" for rest in rests])
            fields[name] = (dict[str, sub], Field(default_factory=dict, description=info.description))
        else:
            sub = _restricted(annotation, rests)
            fields[name] = (sub, Field(default_factory=sub, description=info.description))
    return create_model(f"{model.__name__}Excerpt", __base__=Section, __doc__=model.__doc__, **fields)


_EXCERPT_MODELS: dict[tuple[str, ...], type[BaseModel]] = {}


def excerpt_model(paths: tuple[str, ...]) -> type[BaseModel]:
    """The model of a stage's config excerpt: :class:`Config` restricted to the dotted key
    ``paths`` the stage reads (``runs.<name>.weights`` keeps one run's weights)."""
    if paths not in _EXCERPT_MODELS:
        _EXCERPT_MODELS[paths] = _restricted(Config, list(paths))
    return _EXCERPT_MODELS[paths]


def _pick(tree: Any, path: list[str]) -> Any:
    if not path:
        return tree
    return {path[0]: _pick(tree[path[0]], path[1:])}


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def excerpt(cfg: Config, paths: tuple[str, ...]) -> dict[str, Any]:
    """The values of ``cfg`` at the dotted key ``paths``, as a JSON-ready nested mapping."""
    tree = cfg.model_dump(mode="json", by_alias=True)
    out: dict[str, Any] = {}
    for path in paths:
        out = _merge(out, _pick(tree, path.split(".")))
    return out


def validate_excerpt(raw: Any, paths: tuple[str, ...], source: str) -> BaseModel:
    """A stage's excerpt, validated against the models restricted to the keys it reads."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return excerpt_model(paths).model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source)) from None


# ----------------------------------------------------------------------------- schema


class _DocumentedDefaults(GenerateJsonSchema):
    """Write every default into the schema, also those made by a ``default_factory``."""

    def default_schema(self, schema):
        if "default_factory" in schema and not schema.get("default_factory_takes_data"):
            schema = {k: v for k, v in schema.items() if k != "default_factory"} | {
                "default": schema["default_factory"]()
            }
        return super().default_schema(schema)


def json_schema() -> dict[str, Any]:
    """The JSON schema of :class:`Config` (``workflow/schemas/config.schema.yaml``), with every
    key's default and help text."""
    schema = Config.model_json_schema(by_alias=True, mode="validation", schema_generator=_DocumentedDefaults)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    header = "# GENERATED from src/podyn/config.py by `python -m podyn.config --write-schema`; do not edit.\n"
    return header + yaml.safe_dump(json_schema(), sort_keys=False, width=119, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m podyn.config", description="The config's JSON schema and defaults."
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write-schema", action="store_true", help=f"regenerate {SCHEMA_PATH.relative_to(REPO)}")
    action.add_argument("--check-schema", action="store_true", help="exit 1 if the committed schema is out of date")
    action.add_argument("--defaults", action="store_true", help="print the complete default config as YAML")
    action.add_argument(
        "--show",
        metavar="CONFIG",
        nargs="+",
        help="print config files merged as Snakemake merges --configfile (later files win, key by key) and "
        "completed with defaults, as YAML",
    )
    args = parser.parse_args(argv)
    if args.write_schema:
        SCHEMA_PATH.write_text(schema_text())
        print(f"wrote {SCHEMA_PATH}")
    elif args.check_schema:
        if not SCHEMA_PATH.exists() or SCHEMA_PATH.read_text() != schema_text():
            print(f"{SCHEMA_PATH} is out of date: run `python -m podyn.config --write-schema`", file=sys.stderr)
            return 1
    else:
        try:
            cfg = Config() if args.defaults else _load_merged(args.show)
        except ConfigError as err:
            print(f"python -m podyn.config: error: {err}", file=sys.stderr)
            return 2
        print(yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True), sort_keys=False), end="")
    return 0


def _load_merged(paths: list[str]) -> Config:
    raw: dict[str, Any] = {}
    for path in paths:
        raw = _merge(raw, read_yaml(path))
    return validate_config(raw, ", ".join(paths))


if __name__ == "__main__":
    sys.exit(main())
