"""Usage: git show 92dde38:src/podyn/objectives.py > /tmp/objectives_old.py
       python bench/reference/tie_rule_count.py /tmp/objectives_old.py src

Tokens put in another tertile than an exact sort, old rule (ties by neighbour gaps) vs new
(ties bounded by the cluster's largest score), on whitened |advantages| of seeded draws."""
import importlib.util
import sys

import numpy as np
import torch

sys.path.insert(0, sys.argv[2])
from podyn.objectives import tertile_groups as new_rule  # noqa: E402

spec = importlib.util.spec_from_file_location("objectives_old", sys.argv[1])
old = importlib.util.module_from_spec(spec)
sys.modules["objectives_old"] = old
spec.loader.exec_module(old)


def exact(scores):
    order = torch.sort(-scores.double(), stable=True).indices
    groups = torch.empty_like(order)
    for g, part in enumerate(torch.tensor_split(order, 3)):
        groups[part] = g
    return groups


rng = np.random.default_rng(0)
print("| draw | n | old rule: tokens off | new rule: tokens off |")
print("|---|---:|---:|---:|")
DRAWS = {
    "normal": rng.standard_normal,
    "laplace": lambda n: rng.laplace(size=n),
    "student-t 3": lambda n: rng.standard_t(3, n),
}
for name, draw in DRAWS.items():
    for n in (512, 4096, 16384):
        a = torch.from_numpy(draw(n))
        scores = ((a - a.mean()) / a.std()).abs().float()
        ref = exact(scores)
        off_old, off_new = int((old.tertile_groups(scores) != ref).sum()), int((new_rule(scores) != ref).sum())
        print(f"| {name} | {n} | {off_old} | {off_new} |")
