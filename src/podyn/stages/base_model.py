"""Stage ``base-model``: the initial model and tokenizer, saved with ``save_pretrained``."""

from __future__ import annotations

from pathlib import Path

from ..config import Config, ConfigError
from ..data.synthetic import vocabulary
from ..io import save_pretrained_atomic
from ..models import build_gpt_neox, build_word_tokenizer, prepare_tokenizer


def base_model(cfg: Config, *, out: Path) -> None:
    """A tiny GPT-NeoX with a word-level tokenizer (``model.init: scratch``, synthetic task
    only), or ``model.name_or_path`` (``pretrained``)."""
    model_cfg = cfg.model
    if model_cfg.init == "scratch":
        if cfg.data.source != "synthetic":
            raise ConfigError(
                "invalid value at 'model.init': 'scratch' builds a word-level tokenizer for the synthetic task only; "
                "use 'pretrained' for real data"
            )
        tokenizer = build_word_tokenizer(vocabulary())
        model = build_gpt_neox(len(tokenizer), tokenizer, model_cfg.arch, cfg.seed)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(model_cfg.name_or_path))
        model = AutoModelForCausalLM.from_pretrained(model_cfg.name_or_path)
        model.config.pad_token_id = tokenizer.pad_token_id
    save_pretrained_atomic(out, model, tokenizer)
