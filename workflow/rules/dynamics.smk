rule final_responses:
    """D': the final policy's responses to the evaluation prompts (docs/method.md §1)."""
    input:
        data=rules.prepare_data.output,
        checkpoints=f"{RESULTS}/runs/{{run}}/seed{{seed}}/checkpoints.json",
    output:
        f"{RESULTS}/dynamics/{{run}}/seed{{seed}}_final_responses.jsonl",
    params:
        cfg=stage_config("final-responses"),
        data=f"{RESULTS}/data",
    threads: CFG.threads
    priority: DYNAMICS_PRIORITY
    log:
        f"{RESULTS}/logs/final_responses/{{run}}_seed{{seed}}.log",
    shell:
        "podyn final-responses --config {params.cfg:q} --threads {threads} --run {wildcards.run} --seed {wildcards.seed}"
        " --data {params.data} --checkpoints {input.checkpoints} --out {output} > {log} 2>&1"


rule dynamics:
    """G for TOT/POS/NEG/TOP/MID/BOT at every analysis checkpoint of one run and seed."""
    input:
        data=rules.prepare_data.output,
        ref_logps=rules.reference_logps.output,
        checkpoints=f"{RESULTS}/runs/{{run}}/seed{{seed}}/checkpoints.json",
        final=rules.final_responses.output,
    output:
        table=f"{RESULTS}/dynamics/{{run}}/seed{{seed}}.csv",
        samples=f"{RESULTS}/dynamics/{{run}}/seed{{seed}}_samples.csv",
    params:
        cfg=lambda w: stage_config("dynamics", run=w.run),
        data=f"{RESULTS}/data",
    threads: CFG.threads
    priority: DYNAMICS_PRIORITY
    log:
        f"{RESULTS}/logs/dynamics/{{run}}_seed{{seed}}.log",
    shell:
        "podyn dynamics --config {params.cfg:q} --threads {threads} --run {wildcards.run} --seed {wildcards.seed}"
        " --data {params.data} --ref-logps {input.ref_logps} --checkpoints {input.checkpoints}"
        " --final-responses {input.final} --out {output.table} --samples-out {output.samples} > {log} 2>&1"


rule dynamics_table:
    """One table per run over all seeds: run, seed, step, component, layer, G."""
    input:
        expand(f"{RESULTS}/dynamics/{{{{run}}}}/seed{{seed}}.csv", seed=SEEDS),
    output:
        f"{RESULTS}/dynamics/{{run}}.csv",
    priority: DYNAMICS_PRIORITY
    log:
        f"{RESULTS}/logs/dynamics/{{run}}_table.log",
    shell:
        "podyn concat --inputs {input} --out {output} > {log} 2>&1"
