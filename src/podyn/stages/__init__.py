"""The workflow's model stages, one module per stage: data, base model, SFT, reward model,
reference log-probs, greedy generation and preference-optimization training. Each is
declared in :mod:`podyn.registry` and called by ``podyn <stage>``."""
