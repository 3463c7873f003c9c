DPO_FIG_RUN = CFG.figures.dpo_run
PPO_FIG_RUN = CFG.figures.ppo_run
FORMATS = CFG.figures.formats


def records_of(run):
    """The run's records, one per seed, in the order of SEEDS (passed as --seeds)."""
    return [f"{RESULTS}/runs/{run}/seed{seed}/records.csv" for seed in SEEDS]


# every (run, seed) pair, in one order for the scores files and their --runs/--seeds labels
RUN_SEEDS = [(run, seed) for run in RUNS for seed in SEEDS]


rule dynamics_figures:
    """Figures 1, 2, 3 and 5, from cached tables: a plotting option reruns only this rule."""
    input:
        dpo=f"{RESULTS}/dynamics/{DPO_FIG_RUN}.csv",
        ppo=f"{RESULTS}/dynamics/{PPO_FIG_RUN}.csv",
        dpo_records=records_of(DPO_FIG_RUN),
        ppo_records=records_of(PPO_FIG_RUN),
    output:
        expand(f"{RESULTS}/figures/{{name}}.{{fmt}}", name=["fig1_dpo_dynamics", "fig2_ppo_dynamics", "fig3_ppo_advantages", "fig5_grad_magnitudes"], fmt=FORMATS),
    params:
        cfg=stage_config("figures"),
        seeds=SEEDS,
        out=f"{RESULTS}/figures",
    log:
        f"{RESULTS}/logs/figures/dynamics.log",
    shell:
        "podyn figures --config {params.cfg:q} --dpo {input.dpo} --ppo {input.ppo} --seeds {params.seeds}"
        " --dpo-records {input.dpo_records} --ppo-records {input.ppo_records} --out {params.out} > {log} 2>&1"


rule ablations:
    """Win-rate tables (final and best step, CIs across seeds and over prompts), paired
    comparisons of each variant with its baseline, and figure 4."""
    input:
        winrates=rules.winrates.output.winrates,
        scores=[f"{RESULTS}/eval/judgements/{run}/seed{seed}_scores.csv" for run, seed in RUN_SEEDS],
    output:
        tables=expand(f"{RESULTS}/tables/winrates.{{ext}}", ext=["csv", "md", "tex"]),
        comparisons=f"{RESULTS}/tables/comparisons.csv",
        figure=expand(f"{RESULTS}/figures/fig4_ablations.{{fmt}}", fmt=FORMATS),
    params:
        cfg=stage_config("ablations"),
        runs=[run for run, _ in RUN_SEEDS],
        seeds=[seed for _, seed in RUN_SEEDS],
        tables=f"{RESULTS}/tables",
        figures=f"{RESULTS}/figures",
    log:
        f"{RESULTS}/logs/figures/ablations.log",
    shell:
        "podyn ablations --config {params.cfg:q} --winrates {input.winrates} --runs {params.runs} --seeds {params.seeds}"
        " --scores {input.scores} --tables {params.tables} --figures {params.figures} > {log} 2>&1"


rule claims:
    """The paper's qualitative claims as statistics with thresholds and verdicts."""
    input:
        dpo=f"{RESULTS}/dynamics/{DPO_FIG_RUN}.csv",
        ppo=f"{RESULTS}/dynamics/{PPO_FIG_RUN}.csv",
        ppo_records=records_of(PPO_FIG_RUN),
        comparisons=rules.ablations.output.comparisons,
    output:
        md=f"{RESULTS}/claims.md",
        csv=f"{RESULTS}/claims.csv",
    params:
        cfg=stage_config("claims"),
        seeds=SEEDS,
    log:
        f"{RESULTS}/logs/claims.log",
    shell:
        "podyn claims --config {params.cfg:q} --dpo {input.dpo} --ppo {input.ppo} --seeds {params.seeds}"
        " --ppo-records {input.ppo_records} --comparisons {input.comparisons} --out {output.md} --csv-out {output.csv} > {log} 2>&1"
