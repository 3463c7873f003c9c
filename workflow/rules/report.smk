rule report_pages:
    """HTML views of the win-rate table, the paired comparisons, Coordinated PO's table and the
    claims report, which `snakemake --report` shows inline (it offers Markdown and CSV files only
    as downloads)."""
    input:
        winrates=f"{RESULTS}/tables/winrates.md",
        comparisons=rules.ablations.output.comparisons,
        copo=rules.coordination.output.table,
        claims=rules.claims.output.md,
    output:
        winrates=report_file(f"{RESULTS}/report/winrates.html", "Win-rate table", "winrates", REPORT_WINRATES),
        comparisons=report_file(f"{RESULTS}/report/comparisons.html", "Paired comparisons", "comparisons", REPORT_WINRATES),
        copo=report_file(f"{RESULTS}/report/copo.html", "Coordinated PO", "copo", REPORT_WINRATES),
        claims=report_file(f"{RESULTS}/report/claims.html", "Paper claims", "claims", REPORT_CLAIMS),
    params:
        out=f"{RESULTS}/report",
    log:
        f"{RESULTS}/logs/report_pages.log",
    shell:
        "podyn report-pages --winrates {input.winrates} --comparisons {input.comparisons} --copo {input.copo}"
        " --claims {input.claims} --out {params.out} > {log} 2>&1"
