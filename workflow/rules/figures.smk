DPO_FIG_RUN = CFG.figures.dpo_run
PPO_FIG_RUN = CFG.figures.ppo_run
FORMATS = CFG.figures.formats
# `snakemake --report` shows one file of each figure inline: the raster one if there is one
REPORT_FORMAT = next(fmt for fmt in ("png", "svg", "pdf") if fmt in FORMATS)


def figure_files(name, what, category):
    """A figure's files, one per configured format; the report shows the REPORT_FORMAT one."""
    paths = {fmt: f"{RESULTS}/figures/{name}.{fmt}" for fmt in FORMATS}
    return [report_file(path, what, name, category) if fmt == REPORT_FORMAT else path for fmt, path in paths.items()]


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
        figure_files("fig1_dpo_dynamics", "Figure 1: DPO dynamics", REPORT_DYNAMICS),
        figure_files("fig2_ppo_dynamics", "Figure 2: PPO dynamics", REPORT_DYNAMICS),
        figure_files("fig3_ppo_advantages", "Figure 3: PPO advantages", REPORT_DYNAMICS),
        figure_files("fig5_grad_magnitudes", "Figure 5: gradient norms", REPORT_DYNAMICS),
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
        tables=[
            report_file(f"{RESULTS}/tables/winrates.csv", "Win-rate table", "winrates", REPORT_DATA),
            f"{RESULTS}/tables/winrates.md",
            f"{RESULTS}/tables/winrates.tex",
        ],
        comparisons=report_file(f"{RESULTS}/tables/comparisons.csv", "Paired comparisons", "comparisons", REPORT_DATA),
        figure=figure_files("fig4_ablations", "Figure 4: ablations and coordinated variants", REPORT_WINRATES),
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
        csv=report_file(f"{RESULTS}/claims.csv", "Paper claims", "claims", REPORT_DATA),
    params:
        cfg=stage_config("claims"),
        seeds=SEEDS,
    log:
        f"{RESULTS}/logs/claims.log",
    shell:
        "podyn claims --config {params.cfg:q} --dpo {input.dpo} --ppo {input.ppo} --seeds {params.seeds}"
        " --ppo-records {input.ppo_records} --comparisons {input.comparisons} --out {output.md} --csv-out {output.csv} > {log} 2>&1"


rule coordination:
    """The weights every run applied (fig6), Coordinated PO against its baseline and the best
    fixed variant (fig7), and tables/copo.csv: its cost, final weights and paired comparisons."""
    input:
        winrates=rules.winrates.output.winrates,
        scores=[f"{RESULTS}/eval/judgements/{run}/seed{seed}_scores.csv" for run, seed in RUN_SEEDS],
        records=[f"{RESULTS}/runs/{run}/seed{seed}/records.csv" for run, seed in RUN_SEEDS],
        timing=[f"{RESULTS}/runs/{run}/seed{seed}/timing.csv" for run, seed in RUN_SEEDS],
    output:
        table=report_file(f"{RESULTS}/tables/copo.csv", "Coordinated PO", "copo", REPORT_DATA),
        figures=[
            *figure_files("fig6_weights", "Figure 6: component weights applied", REPORT_DYNAMICS),
            *figure_files("fig7_copo", "Figure 7: Coordinated PO", REPORT_WINRATES),
        ],
    params:
        cfg=stage_config("coordination"),
        runs=[run for run, _ in RUN_SEEDS],
        seeds=[seed for _, seed in RUN_SEEDS],
        tables=f"{RESULTS}/tables",
        figures=f"{RESULTS}/figures",
    log:
        f"{RESULTS}/logs/figures/coordination.log",
    shell:
        "podyn coordination --config {params.cfg:q} --winrates {input.winrates}"
        " --runs {params.runs} --seeds {params.seeds} --scores {input.scores} --records {input.records}"
        " --timing {input.timing}"
        " --tables {params.tables} --figures {params.figures} > {log} 2>&1"
