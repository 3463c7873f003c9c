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


REWARD_MODEL_JUDGE = CFG.judge.type == "reward_model"

if REWARD_MODEL_JUDGE:

    rule judge_model:
        """The reward-model judge: a reward model trained on judge_prefs, pairs disjoint from
        the policy's, initialised from the SFT model."""
        input:
            data=rules.prepare_data.output,
            sft=rules.sft.output,
        output:
            model=directory(f"{RESULTS}/models/judge"),
            metrics=f"{RESULTS}/eval/judge_model.csv",
        params:
            cfg=stage_config("reward-model"),
            data=f"{RESULTS}/data",
            workdir=f"{RESULTS}/work/judge_model",
        threads: SERIAL_THREADS
        log:
            f"{RESULTS}/logs/judge_model.log",
        shell:
            "podyn reward-model --config {params.cfg:q} --threads {threads} --data {params.data} --sft {input.sft}"
            " --split judge_prefs --out {output.model} --metrics {output.metrics} --workdir {params.workdir} > {log} 2>&1"


rule judge:
    input:
        generations=f"{RESULTS}/runs/{{run}}/seed{{seed}}/generations.jsonl",
        baseline=rules.sft_generations.output,
        judge_model=[f"{RESULTS}/models/judge"] if REWARD_MODEL_JUDGE else [],
    output:
        table=f"{RESULTS}/eval/judgements/{{run}}/seed{{seed}}.csv",
        scores=f"{RESULTS}/eval/judgements/{{run}}/seed{{seed}}_scores.csv",
    params:
        cfg=stage_config("judge"),
        judge_model=f"--judge-model {RESULTS}/models/judge" if REWARD_MODEL_JUDGE else "",
        cache=f"{RESULTS}/cache/judge/{{run}}_seed{{seed}}.jsonl",
    log:
        f"{RESULTS}/logs/judge/{{run}}_seed{{seed}}.log",
    shell:
        "podyn judge --config {params.cfg:q} --run {wildcards.run} --seed {wildcards.seed}"
        " --generations {input.generations} --baseline {input.baseline} --out {output.table} --scores-out {output.scores} --cache {params.cache} {params.judge_model} > {log} 2>&1"


rule winrates:
    input:
        expand(f"{RESULTS}/eval/judgements/{{run}}/seed{{seed}}.csv", run=RUNS, seed=SEEDS),
    output:
        winrates=report_file(
            f"{RESULTS}/eval/winrates.csv", "Win rate at every judged step", "winrates_per_step", REPORT_DATA
        ),
        gold=f"{RESULTS}/eval/gold_rewards.csv",
    log:
        f"{RESULTS}/logs/winrates.log",
    shell:
        "podyn winrates --inputs {input} --out {output.winrates} --gold-out {output.gold} > {log} 2>&1"
