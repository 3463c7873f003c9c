ROBUSTNESS = CFG.robustness.settings
ROBUSTNESS_RUNS = sorted({run for setting in ROBUSTNESS.values() for run in (setting.dpo, setting.ppo)})
# the PPO runs' records, one per seed, in one order for --record-runs/--seeds
ROBUSTNESS_RECORDS = [(run, seed) for run in ROBUSTNESS_RUNS if CFG.runs[run].objective == "ppo" for seed in SEEDS]


rule claims_robustness:
    """Every dynamics claim under every setting of `robustness.settings`, with CIs across seeds."""
    input:
        dynamics=[f"{RESULTS}/dynamics/{run}.csv" for run in ROBUSTNESS_RUNS],
        records=[f"{RESULTS}/runs/{run}/seed{seed}/records.csv" for run, seed in ROBUSTNESS_RECORDS],
    output:
        table=f"{RESULTS}/tables/claims_robustness.csv",
        figure=[f"{RESULTS}/figures/claims_robustness.{fmt}" for fmt in FORMATS],
    params:
        cfg=stage_config("claims-robustness"),
        dynamics_runs=ROBUSTNESS_RUNS,
        record_runs=[run for run, _ in ROBUSTNESS_RECORDS],
        seeds=[seed for _, seed in ROBUSTNESS_RECORDS],
        figure=f"{RESULTS}/figures/claims_robustness",
    log:
        f"{RESULTS}/logs/claims_robustness.log",
    shell:
        "podyn claims-robustness --config {params.cfg:q}"
        " --dynamics {input.dynamics} --dynamics-runs {params.dynamics_runs}"
        " --records {input.records} --record-runs {params.record_runs} --seeds {params.seeds}"
        " --out {output.table} --figure {params.figure} > {log} 2>&1"
