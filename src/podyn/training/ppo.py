"""RLHF PPO (docs/method.md §3), as in InstructGPT / TRL: sampled rollouts, reward-model score at
the last response token, per-token KL penalty to the reference, a value model, GAE, whitened
advantages and several clipped-objective epochs per rollout batch. The policy loss is the
weighted component sum of :func:`podyn.objectives.ppo_policy_loss`, so PPO ablations, cPPO and
hPPO are weight schedules. One training step here is one PPO iteration (rollout batch)."""

from __future__ import annotations

from typing import Any

import torch

from ..config import PPOConfig
from ..controller import WeightSource, as_weight_source
from ..dynamics import PPOBatch
from ..generation import generate
from ..models import disable_dropout, scalar_head_outputs, score_at, token_logps
from ..objectives import (
    gae,
    kl_penalty,
    masked_mean,
    ppo_clip_fraction,
    ppo_policy_loss,
    ppo_token_losses,
    value_loss,
)
from ..schedules import PPO_FACTOR_KEYS, PPOFactors, Weights
from .checkpoints import RunRecorder
from .common import StepRecords, TrainingModule, adamw, clip_grad_norm, grad_norm, metrics_kept, record_weights
from .distributed import (
    all_gather_objects,
    gather_padded_rows,
    global_masked_mean,
    global_masked_whiten,
    global_tertile_groups,
    is_distributed,
    rank_and_world,
)


def response_logps(model: torch.nn.Module, rollout: dict[str, torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """log pi_T(y_t | x, y_<t) for the response tokens, shape (B, R), at the sampling
    temperature T: the policy that sampled the rollout (old), the one being trained and the
    reference are all compared at the same T, as in TRL and lm-human-preferences."""
    width = rollout["prompt_width"]
    return token_logps(model, rollout["sequences"], rollout["attention_mask"], temperature)[:, width - 1 :]


def response_values(value_model: torch.nn.Module, rollout: dict[str, torch.Tensor]) -> torch.Tensor:
    """V(x, y_<t): the value head at the position before each response token, shape (B, R)."""
    width = rollout["prompt_width"]
    return scalar_head_outputs(value_model, rollout["sequences"], rollout["attention_mask"])[:, width - 1 : -1]


def gather_rollout(rollout: dict[str, Any]) -> dict[str, Any]:
    """Every process's rollout rows in one batch, rank by rank: prompts re-padded on the left
    to the widest prompt, responses on the right to the longest response (positions follow the
    attention mask, so log-probs do not change)."""
    if not is_distributed():
        return rollout
    parts = all_gather_objects({k: v.cpu() if torch.is_tensor(v) else v for k, v in rollout.items()})
    width = max(p["prompt_width"] for p in parts)
    out: dict[str, Any] = {"prompt_width": width}
    for key, value in rollout.items():
        if key == "prompt_width":
            continue
        if key in ("sequences", "attention_mask"):
            prompts = gather_padded_rows([p[key][:, : p["prompt_width"]] for p in parts], pad_left=True)
            responses = gather_padded_rows([p[key][:, p["prompt_width"] :] for p in parts], pad_left=False)
            out[key] = torch.cat([prompts, responses], 1)
        elif torch.is_tensor(value) and value.dim() == 2:
            pad = -1 if key == "groups" else 0
            out[key] = gather_padded_rows([p[key] for p in parts], pad_left=False, pad_value=pad)
        elif torch.is_tensor(value) and value.dim() == 1:
            out[key] = torch.cat([p[key] for p in parts])
        else:
            out[key] = value
    return out


def select_rows(rollout: dict[str, Any], rows: torch.Tensor) -> dict[str, Any]:
    return {k: (v[rows] if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in rollout.items()}


class PPOModule(TrainingModule):
    def __init__(
        self,
        policy: torch.nn.Module,
        value_model: torch.nn.Module,
        reference: torch.nn.Module,
        reward_model: torch.nn.Module,
        tokenizer,
        hyper: PPOConfig,
        max_new_tokens: int,
        weights: Weights | WeightSource,
        recorder: RunRecorder | None,
        reward_norm_prompts: list[list[int]] | None = None,
        factors: PPOFactors | None = None,
    ) -> None:
        """``hyper`` is the run's ``ppo`` section (with its overrides), ``weights`` its
        component-weight schedules or a weight source (:mod:`podyn.controller`),
        ``max_new_tokens`` the rollouts' length limit, ``factors`` the multipliers of the clip
        range and the KL coefficient by iteration (absent: 1)."""
        super().__init__()
        self.automatic_optimization = False
        # train mode (from_pretrained returns eval mode) with every dropout probability set to 0:
        # the ratio, the KL and the value targets compare forward passes of these models
        self.policy = disable_dropout(policy).train()
        self.value_model = disable_dropout(value_model).train()
        # frozen models are kept out of the module's parameters and checkpoints
        frozen = {"reference": reference, "reward": reward_model}
        self._frozen = {k: disable_dropout(m).eval().requires_grad_(False) for k, m in frozen.items()}
        self.tokenizer = tokenizer
        self.hyper = hyper
        self.factors = factors or PPOFactors()
        self.max_new_tokens = max_new_tokens
        # a schedule, or a weight source (podyn.controller: Coordinated PO's controller)
        self.weight_source = as_weight_source(weights)
        self.recorder = recorder
        self.records = StepRecords()
        self.iteration = 0
        self.reward_norm_prompts = reward_norm_prompts or []
        self.reward_norm: tuple[float, float] | None = None  # (gain, bias), fitted on SFT rollouts

    def on_fit_start(self) -> None:
        for model in self._frozen.values():
            model.to(self.device)
        if self.trainer.world_size > 1:  # each process samples its share of the rollouts with its own stream
            torch.manual_seed(torch.initial_seed() + self.global_rank)
            if self.hyper.mini_batch_size % self.trainer.world_size:
                raise ValueError(
                    f"ppo.mini_batch_size {self.hyper.mini_batch_size} does not split evenly over "
                    f"{self.trainer.world_size} processes"
                )

    @torch.no_grad()
    def rollout(self, prompt_ids: list[list[int]]) -> dict[str, Any]:
        """Sample responses and compute everything the PPO epochs need."""
        hyper = self.hyper
        temperature = hyper.temperature
        from_sampler = hyper.old_logps == "generation"
        roll = generate(
            self.policy,
            self.tokenizer,
            prompt_ids,
            self.max_new_tokens,
            do_sample=True,
            temperature=temperature,
            return_logps=from_sampler,
        )
        batch = {
            "sequences": roll.sequences,
            "attention_mask": roll.attention_mask,
            "prompt_width": roll.prompt_width,
        }
        mask = roll.response_mask.to(torch.float32)
        if from_sampler:
            old_logps = torch.where(mask.bool(), roll.sampler_logps, 0.0)
        else:  # one forward pass, the trained log-probs' own code: rho = 1 exactly before the first update
            old_logps = response_logps(self.policy, batch, temperature) * mask
        ref_logps = response_logps(self._frozen["reference"], batch, temperature) * mask
        values = response_values(self.value_model, batch) * mask
        last = mask.sum(1).long() - 1
        score = score_at(self._frozen["reward"], roll.sequences, roll.attention_mask, roll.prompt_width + last)
        if self.reward_norm is not None:
            gain, bias = self.reward_norm
            score = gain * score + bias
        score = score - hyper.missing_eos_penalty * (~roll.ended).float()
        kl = kl_penalty(old_logps, ref_logps, hyper.kl_estimator) * mask
        rewards = -self.hyper_at("kl_coef", self.iteration) * kl
        rewards[torch.arange(len(last)), last] += score
        raw_advantages, returns = gae(rewards, values, mask, hyper.gamma, hyper.lam)
        advantages = global_masked_whiten(raw_advantages, mask)  # over the global rollout batch
        batch.update(
            response_mask=mask,
            old_logps=old_logps,
            ref_logps=ref_logps,
            values=values,
            scores=score,
            kl=kl,
            rewards=rewards,
            raw_advantages=raw_advantages,
            advantages=advantages,
            returns=returns,
            groups=global_tertile_groups(advantages.abs(), mask),
            ended=roll.ended,
            temperature=temperature,
        )
        return batch

    @torch.no_grad()
    def fit_reward_normalization(self, prompt_ids: list[list[int]]) -> tuple[float, float]:
        """Gain and bias that give the reward model's scores on rollouts of the current (SFT)
        policy the mean ``reward_norm_mean`` and standard deviation ``reward_norm_std``
        (lm-human-preferences' reward normalisation). Fixed for the rest of the run.

        Under DDP each process samples its contiguous share of ``prompt_ids`` (rank by rank, in
        chunks of its share of ``rollout_batch_size``), the gain and bias are fitted on every
        process's scores together: every process gathers the same scores in the same order, so
        every process computes the same gain and bias, fitted on the whole prompt set as in one
        process."""
        hyper, temperature = self.hyper, self.hyper.temperature
        rank, world = rank_and_world()
        share = -(-len(prompt_ids) // world)  # ceil: rank r takes rows [r * share, (r + 1) * share)
        mine = prompt_ids[rank * share : (rank + 1) * share]
        chunk_rows = max(1, hyper.rollout_batch_size // world)
        scores = [torch.zeros(0, dtype=torch.float64)]  # a process with no prompts sends none
        for start in range(0, len(mine), chunk_rows):
            chunk = mine[start : start + chunk_rows]
            roll = generate(
                self.policy, self.tokenizer, chunk, self.max_new_tokens, do_sample=True, temperature=temperature
            )
            last = roll.prompt_width + roll.response_mask.sum(1) - 1
            scores.append(score_at(self._frozen["reward"], roll.sequences, roll.attention_mask, last).double().cpu())
        raw = torch.cat(all_gather_objects(torch.cat(scores)))  # every process's scores, rank by rank
        gain = hyper.reward_norm_std / float(raw.std().clamp(min=1e-8))
        self.reward_norm = (gain, hyper.reward_norm_mean - gain * float(raw.mean()))
        return self.reward_norm

    def hyper_at(self, key: str, it: int) -> float:
        """``ppo.clip_eps`` or ``ppo.kl_coef`` at iteration ``it``: the section's value times the
        run's factor (:class:`podyn.schedules.PPOFactors`)."""
        return getattr(self.hyper, key) * self.factors.at(key, it)  # an unset factor is 1.0: exact

    def training_step(self, prompt_ids: list[list[int]], batch_idx: int) -> None:
        it = self.iteration
        if self.hyper.normalize_reward and self.reward_norm is None:
            self.fit_reward_normalization(self.reward_norm_prompts)
        batch = self.rollout(prompt_ids)
        clip_eps = self.hyper_at("clip_eps", it)
        weights = self.weight_source(it, lambda: (self.policy, PPOBatch.from_record({**batch, "clip_eps": clip_eps})))
        record_weights(self.records, it, weights, self.weight_source)
        for key in PPO_FACTOR_KEYS:
            if getattr(self.factors, key) is not None:
                self.records.add(step=it, kind=f"hyper/{key}", value=self.hyper_at(key, it))
        if self.recorder is not None and self.recorder.records_at(it):
            payload = gather_rollout(batch)  # the global rollout batch, rank by rank
            if self.trainer.is_global_zero:
                payload = {"step": it, "weights": weights.__dict__, "clip_eps": clip_eps, **payload}
                self.recorder.at_step(it, self.policy, payload)
        self._record_advantages(it, batch)
        stats = self._optimise(batch, weights, it)
        if metrics_kept(self):
            self._log_iteration(batch, stats)
        self.lr_schedulers().step()  # one step per PPO iteration (manual optimisation)
        self.iteration += 1

    def _optimise(self, batch: dict[str, Any], weights, it: int) -> dict[str, float]:
        """PPO's epochs over one rollout batch of iteration ``it``, at that iteration's clip range."""
        hyper = self.hyper
        clip_eps = self.hyper_at("clip_eps", it)
        opt = self.optimizers()
        n_rows = batch["sequences"].shape[0]
        rows_per_minibatch = hyper.mini_batch_size // rank_and_world()[1]  # this process's share
        stats: dict[str, list[float]] = {
            k: [] for k in ("policy", "value", "clipfrac", "vclipfrac", "ratio", "approxkl")
        }
        for _ in range(hyper.ppo_epochs):
            for rows in torch.randperm(n_rows, device=batch["sequences"].device).split(rows_per_minibatch):
                mb = select_rows(batch, rows)
                mask = mb["response_mask"]
                logps = response_logps(self.policy, mb, hyper.temperature)
                policy_loss = ppo_policy_loss(
                    logps, mb["old_logps"], mb["advantages"], mask, mb["groups"], weights, clip_eps
                )
                vpred = response_values(self.value_model, mb)
                v_loss = value_loss(vpred, mb["values"], mb["returns"], mask, hyper.cliprange_value)
                opt.zero_grad()
                self.manual_backward(policy_loss + hyper.vf_coef * v_loss)
                self.records.add(step=it, kind="grad_norm", value=grad_norm(self.policy.parameters()))
                if hyper.max_grad_norm:  # null or 0: no clipping
                    clip_grad_norm(self, opt, hyper.max_grad_norm)
                opt.step()
                with torch.no_grad():
                    _, ratio = ppo_token_losses(logps, mb["old_logps"], mb["advantages"], clip_eps)
                    stats["policy"].append(float(policy_loss))
                    stats["value"].append(float(v_loss))
                    stats["ratio"].append(float(masked_mean(ratio, mask)))
                    clipfrac = ppo_clip_fraction(logps, mb["old_logps"], mb["advantages"], mask, clip_eps)
                    stats["clipfrac"].append(float(clipfrac))
                    stats["approxkl"].append(float(masked_mean(0.5 * (logps - mb["old_logps"]) ** 2, mask)))
                    # where the clipped value loss is the larger one (TRL's vf_clipfrac)
                    vrange = hyper.cliprange_value
                    vclipped = mb["values"] + torch.clamp(vpred - mb["values"], -vrange, vrange)
                    vclip = ((vclipped - mb["returns"]) ** 2 > (vpred - mb["returns"]) ** 2).float()
                    stats["vclipfrac"].append(float(masked_mean(vclip, mask)))
        return {k: sum(v) / len(v) for k, v in stats.items()}

    def _record_advantages(self, it: int, batch: dict[str, Any]) -> None:
        """Mean raw (pre-whitening) advantage of the TOP, MID and BOT token groups (figure 3), and
        their mean |raw advantage| (the claim that TOP tokens carry the largest advantages: a signed
        mean can cancel to 0 in a group of large positive and negative advantages)."""
        raw = batch["raw_advantages"]
        for group_id, name in enumerate(("top", "mid", "bot")):
            in_group = (batch["groups"] == group_id).float() * batch["response_mask"]
            self.records.add(step=it, kind=f"raw_advantage/{name}", value=float(global_masked_mean(raw, in_group)))
            self.records.add(
                step=it, kind=f"abs_raw_advantage/{name}", value=float(global_masked_mean(raw.abs(), in_group))
            )

    def _log_iteration(self, batch: dict[str, Any], stats: dict[str, float]) -> None:
        # under DDP each value is the mean over processes of the process's value
        world = rank_and_world()[1]
        distributed = world > 1
        kl = batch["kl"]
        non_score = (batch["rewards"].sum(1) - batch["scores"]).mean()
        self.log_dict(
            {
                "objective/kl": kl.sum(1).mean(),
                "objective/scores": batch["scores"].mean(),
                "objective/non_score_reward": non_score,
                "objective/rlhf_reward": batch["scores"].mean() + non_score,
                "policy/approxkl_avg": stats["approxkl"],
                "policy/clipfrac_avg": stats["clipfrac"],
                "loss/policy_avg": stats["policy"],
                "loss/value_avg": stats["value"],
                "val/clipfrac_avg": stats["vclipfrac"],
                "val/ratio": stats["ratio"],
                "val/num_eos_tokens": batch["ended"].float().sum() * world,  # the mean over processes, times W
                "iteration": float(self.iteration),
            },
            prog_bar=False,
            sync_dist=distributed,
        )
        self.log("score", batch["scores"].mean(), prog_bar=True, sync_dist=distributed)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["podyn_records"] = self.records.state_dict()
        checkpoint["podyn_iteration"] = self.iteration
        checkpoint["podyn_reward_norm"] = self.reward_norm
        checkpoint["podyn_weight_source"] = self.weight_source.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.records.load_state_dict(checkpoint.get("podyn_records", []))
        self.iteration = checkpoint.get("podyn_iteration", 0)
        self.reward_norm = checkpoint.get("podyn_reward_norm")
        self.weight_source.load_state_dict(checkpoint.get("podyn_weight_source", {}))

    def configure_optimizers(self):
        opt = adamw(  # fused on CUDA parameters, as for the other stages
            [
                {"params": self.policy.parameters(), "lr": self.hyper.lr},
                {"params": self.value_model.parameters(), "lr": self.hyper.value_lr},
            ],
            weight_decay=self.hyper.weight_decay,
            eps=1e-5,
        )
        total = self.hyper.iterations
        if self.hyper.lr_schedule == "linear":  # from lr at iteration 0 down to lr / total at the last
            factor = lambda it: 1.0 - min(it, total - 1) / total  # noqa: E731
        else:
            factor = lambda it: 1.0  # noqa: E731
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.LambdaLR(opt, factor)}
