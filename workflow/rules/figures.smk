DPO_FIG_RUN = config["figures"]["dpo_run"]
PPO_FIG_RUN = config["figures"]["ppo_run"]


def records_of(run):
    return expand(f"{RESULTS}/runs/{run}/seed{{seed}}/records.csv", seed=SEEDS)


rule dynamics_figures:
    """Figures 1, 2, 3 and 5, from cached tables: a plotting option reruns only this rule."""
    input:
        dpo=f"{RESULTS}/dynamics/{DPO_FIG_RUN}.csv",
        ppo=f"{RESULTS}/dynamics/{PPO_FIG_RUN}.csv",
        dpo_records=records_of(DPO_FIG_RUN),
        ppo_records=records_of(PPO_FIG_RUN),
    output:
        expand(f"{RESULTS}/figures/{{name}}.{{fmt}}", name=["fig1_dpo_dynamics", "fig2_ppo_dynamics", "fig3_ppo_advantages", "fig5_grad_magnitudes"], fmt=config["figures"]["formats"]),
    params:
        cfg=stage_config("figures"),
        out=f"{RESULTS}/figures",
    log:
        f"{RESULTS}/logs/figures/dynamics.log",
    shell:
        "podyn figures --config {params.cfg:q} --dpo {input.dpo} --ppo {input.ppo} --dpo-records {input.dpo_records}"
        " --ppo-records {input.ppo_records} --out {params.out} > {log} 2>&1"


rule ablations:
    """Win-rate tables (final and best step, CIs across seeds and over prompts), paired
    comparisons of each variant with its baseline, and figure 4."""
    input:
        winrates=rules.winrates.output.winrates,
        scores=expand(f"{RESULTS}/eval/judgements/{{run}}/seed{{seed}}_scores.csv", run=RUNS, seed=SEEDS),
    output:
        tables=expand(f"{RESULTS}/tables/winrates.{{ext}}", ext=["csv", "md", "tex"]),
        comparisons=f"{RESULTS}/tables/comparisons.csv",
        figure=expand(f"{RESULTS}/figures/fig4_ablations.{{fmt}}", fmt=config["figures"]["formats"]),
    params:
        cfg=stage_config("figures", "winrate", runs=config["runs"]),
        tables=f"{RESULTS}/tables",
        figures=f"{RESULTS}/figures",
    log:
        f"{RESULTS}/logs/figures/ablations.log",
    shell:
        "podyn ablations --config {params.cfg:q} --winrates {input.winrates} --scores {input.scores}"
        " --tables {params.tables} --figures {params.figures} > {log} 2>&1"


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
    log:
        f"{RESULTS}/logs/claims.log",
    shell:
        "podyn claims --config {params.cfg:q} --dpo {input.dpo} --ppo {input.ppo} --ppo-records {input.ppo_records} --comparisons {input.comparisons}"
        " --out {output.md} --csv-out {output.csv} > {log} 2>&1"


rule coordination:
    """The weights every run applied (fig6), Coordinated PO against its baseline and the best
    fixed variant (fig7), and tables/copo.csv: its cost, final weights and paired comparisons."""
    input:
        winrates=rules.winrates.output.winrates,
        scores=expand(f"{RESULTS}/eval/judgements/{{run}}/seed{{seed}}_scores.csv", run=RUNS, seed=SEEDS),
        records=expand(f"{RESULTS}/runs/{{run}}/seed{{seed}}/records.csv", run=RUNS, seed=SEEDS),
    output:
        table=f"{RESULTS}/tables/copo.csv",
        figures=expand(f"{RESULTS}/figures/{{name}}.{{fmt}}", name=["fig6_weights", "fig7_copo"], fmt=config["figures"]["formats"]),
    params:
        cfg=stage_config("figures", "winrate", runs=config["runs"]),
        tables=f"{RESULTS}/tables",
        figures=f"{RESULTS}/figures",
    log:
        f"{RESULTS}/logs/figures/coordination.log",
    shell:
        "podyn coordination --config {params.cfg:q} --winrates {input.winrates} --scores {input.scores} --records {input.records}"
        " --tables {params.tables} --figures {params.figures} > {log} 2>&1"
