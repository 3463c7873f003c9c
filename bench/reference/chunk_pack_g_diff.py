"""How far chunked + packed log-probs move DPO's G and the claims on the tiny test config: the
relative difference of every component's G between two results directories (one run with
``trainer.logps_chunk_tokens: 16, pack_sequences: true``, one without), and the claims whose
values differ. Run by ``chunk_pack_g_diff.sh``; usage: python chunk_pack_g_diff.py PLAIN PACKED"""

import sys

import pandas as pd

plain, packed = sys.argv[1:3]
a, b = (pd.read_csv(f"{d}/dynamics/dpo.csv").query("layer == 'all'") for d in (plain, packed))
m = a.merge(b, on=["run", "seed", "step", "component", "layer"], suffixes=("_plain", "_packed"))
m["rel"] = (m.G_plain - m.G_packed).abs() / m.G_plain.abs().clip(lower=1e-12)
print("DPO analysis steps:", sorted(int(s) for s in m.step.unique()))
for comps, label in ((["tot", "pos", "neg"], "TOT/POS/NEG"), (["top", "mid", "bot"], "TOP/MID/BOT")):
    part = m[m.component.isin(comps)]
    at0 = part[part.step == 0].rel.max()
    print(f"{label}: max relative difference {part.rel.max():.2e} (step 0: {at0:.2e})")
ca, cb = (pd.read_csv(f"{d}/claims.csv") for d in (plain, packed))
claims = ca.merge(cb, on="id", suffixes=("_plain", "_packed"))
columns = ["id", "value_plain", "value_packed", "holds_plain", "holds_packed"]
print(claims[claims.value_plain != claims.value_packed][columns].to_string(index=False))
