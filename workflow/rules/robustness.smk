ROBUSTNESS = config["robustness"]["settings"]
ROBUSTNESS_RUNS = sorted({run for setting in ROBUSTNESS.values() for run in setting.values()})


rule claims_robustness:
    """Every dynamics claim under every setting of `robustness.settings`, with CIs across seeds."""
    input:
        dynamics=expand(f"{RESULTS}/dynamics/{{run}}.csv", run=ROBUSTNESS_RUNS),
        records=expand(f"{RESULTS}/runs/{{run}}/seed{{seed}}/records.csv", run=[r for r in ROBUSTNESS_RUNS if config["runs"][r]["objective"] == "ppo"], seed=SEEDS),
    output:
        table=f"{RESULTS}/tables/claims_robustness.csv",
        figure=expand(f"{RESULTS}/figures/claims_robustness.{{fmt}}", fmt=config["figures"]["formats"]),
    params:
        cfg=stage_config("claims", "figures", "winrate", robustness=config["robustness"]),
        figure=f"{RESULTS}/figures/claims_robustness",
    log:
        f"{RESULTS}/logs/claims_robustness.log",
    shell:
        "podyn claims-robustness --config {params.cfg:q} --dynamics {input.dynamics} --records {input.records}"
        " --out {output.table} --figure {params.figure} > {log} 2>&1"
