#!/bin/bash
# usage: bash bench/reference/tie_rule_and_abs_advantage_cpu2.sh <warm3>/results/default <tie6>/results/default <final7>/results/default
W=$1; T=$2; F=$3
recdiff() {  # records.csv rows matched by (step, kind, occurrence): which changed, by kind
${PY:-.venv/bin/python} - "$@" <<'PY'
import sys
import pandas as pd
A, B = sys.argv[1], sys.argv[2]
for run in sys.argv[3].split(','):
    r1=pd.read_csv(A+f'runs/{run}/seed0/records.csv'); r2=pd.read_csv(B+f'runs/{run}/seed0/records.csv')
    for r in (r1, r2):
        r['n'] = r.groupby(['step','kind']).cumcount()
    m=r1.merge(r2,on=['step','kind','n'],how='outer',suffixes=('_a','_b'),indicator=True)
    m['d']=(m.value_a-m.value_b).abs()
    ch=m[(m.d>0)|(m._merge!='both')]
    print(f"{run}: {len(r1)} vs {len(r2)} rows; only before {(m._merge=='left_only').sum()}, only after {(m._merge=='right_only').sum()}; changed {int((m.d>0).sum())} at {ch.step.nunique()} steps (first {ch.step.min()}); by kind:")
    g=m[m.d>0].groupby('kind').agg(rows=('d','size'), steps=('step', lambda s: sorted(s.unique())[:6]), max=('d','max'))
    print(g.to_string())
PY
}
echo "# The default DAG before and after this session's result-changing commits, on the 2-core machine"
echo "# before: <warm3> = main 623c31e (its outputs equal 92dde38's: the later commits were output-identical, see no_kv_cache_cpu2_172b4ed.log)"
echo "# tie:    <tie6>  = ccb4578 (tertile ties anchored, no chaining), python bench/pipeline.py --out <tie6> (PYTHONPATH=<worktree>/src)"
echo "# final:  <final7> = 75faf6c (+ invalid judgements, |raw advantage| records and claim, ppo_factors, config checks), same command"
echo "# (wall times of these two runs are not measurements: other work ran beside them)"
echo
echo "## python scripts/compare_results.py <warm3> <tie6> --ignore 'logs/warm_start/*' (files outside work/)"
${PY:-.venv/bin/python} scripts/compare_results.py $W $T --ignore 'logs/warm_start/*' | grep -v "^differs: work/"
echo
echo "## python scripts/compare_results.py <tie6> <final7> --ignore 'logs/warm_start/*' (files outside work/)"
${PY:-.venv/bin/python} scripts/compare_results.py $T $F --ignore 'logs/warm_start/*' | grep -v "^differs: work/"
echo
echo "## records.csv, <warm3> -> <tie6>: rows changed by kind (recdiff below)"
recdiff $W/ $T/ ppo,hppo_1,copo_ppo,cppo_mid_3,ppo_wo_mid
echo
echo "## records.csv, <tie6> -> <final7>: only added rows (abs_raw_advantage/*)"
recdiff $T/ $F/ ppo,copo_ppo
echo
echo "## win rates, comparisons, copo.csv and claims, <warm3> -> <final7>"
${PY:-.venv/bin/python} - $W $F <<'PY'
import pandas as pd
import sys
W, B = sys.argv[1] + '/', sys.argv[2] + '/'
w1=pd.read_csv(W+'eval/winrates.csv'); w2=pd.read_csv(B+'eval/winrates.csv')
m=w1.merge(w2,on=['run','seed','step'],suffixes=('_before','_after'))
print(m[m.win_rate_before!=m.win_rate_after][['run','step','win_rate_before','win_rate_after']].round(4).to_string(index=False))
a=pd.read_csv(W+'tables/comparisons.csv'); b=pd.read_csv(B+'tables/comparisons.csv')
key=['panel','variant','baseline','step']
m=a.merge(b,on=key,suffixes=('_a','_b'))
for _,r in m[(m.difference_a!=m.difference_b)|(m.verdict_a!=m.verdict_b)].iterrows():
    print('comparison', r[key].tolist(), f"{r.difference_a:+.4f} [{r.ci_low_a:+.4f}, {r.ci_high_a:+.4f}] MDE {r.mde_a:.4f} {r.verdict_a} -> {r.difference_b:+.4f} [{r.ci_low_b:+.4f}, {r.ci_high_b:+.4f}] MDE {r.mde_b:.4f} {r.verdict_b}")
ca=pd.read_csv(W+'tables/copo.csv'); cb=pd.read_csv(B+'tables/copo.csv')
for c in ca.columns:
    if c not in ('fit_seconds','controller_seconds','cost_fraction') and not ca[c].equals(cb[c]):
        print('copo.csv', c, ca[c].tolist(), '->', cb[c].tolist())
c1=pd.read_csv(W+'claims.csv').set_index('id'); c2=pd.read_csv(B+'claims.csv').set_index('id')
for i in c1.index:
    if not c1.loc[i].equals(c2.loc[i]):
        print('claim', i, '|', c1.loc[i,'statistic'], c1.loc[i,'holds'], '->', c2.loc[i,'statistic'], c2.loc[i,'holds'])
PY
