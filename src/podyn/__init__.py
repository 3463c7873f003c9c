"""podyn: what preference optimization does to a language model while it trains, and why.

A Snakemake benchmark reproducing "What Is Preference Optimization Doing, How and Why?"
(arXiv 2512.00778): DPO and PPO as weighted sums of positive/negative learning and
loss-reweighting components, their gradient alignment G with the final responses, and
judged win rates of the paper's ablations and coordinated variants.
"""

__version__ = "0.1.0"
