rule sft_generations:
    """The SFT model's greedy responses: the baseline every run is judged against."""
    input:
        data=rules.prepare_data.output,
        sft=rules.sft.output,
    output:
        f"{RESULTS}/eval/generations/sft.jsonl",
    params:
        cfg=stage_config("generate"),
        data=f"{RESULTS}/data",
    threads: CFG.threads
    log:
        f"{RESULTS}/logs/sft_generations.log",
    shell:
        "podyn generate --config {params.cfg:q} --threads {threads} --data {params.data} --model {input.sft}"
        " --out {output} > {log} 2>&1"


rule judge:
    input:
        generations=f"{RESULTS}/runs/{{run}}/seed{{seed}}/generations.jsonl",
        baseline=rules.sft_generations.output,
    output:
        table=f"{RESULTS}/eval/judgements/{{run}}/seed{{seed}}.csv",
        scores=f"{RESULTS}/eval/judgements/{{run}}/seed{{seed}}_scores.csv",
    params:
        cfg=stage_config("judge"),
        cache=f"{RESULTS}/cache/judge/{{run}}_seed{{seed}}.jsonl",
    log:
        f"{RESULTS}/logs/judge/{{run}}_seed{{seed}}.log",
    shell:
        "podyn judge --config {params.cfg:q} --run {wildcards.run} --seed {wildcards.seed}"
        " --generations {input.generations} --baseline {input.baseline} --out {output.table} --scores-out {output.scores} --cache {params.cache} > {log} 2>&1"


rule winrates:
    input:
        expand(f"{RESULTS}/eval/judgements/{{run}}/seed{{seed}}.csv", run=RUNS, seed=SEEDS),
    output:
        winrates=f"{RESULTS}/eval/winrates.csv",
        gold=f"{RESULTS}/eval/gold_rewards.csv",
    log:
        f"{RESULTS}/logs/winrates.log",
    shell:
        "podyn winrates --inputs {input} --out {output.winrates} --gold-out {output.gold} > {log} 2>&1"
