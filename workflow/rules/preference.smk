rule train:
    """One preference-optimization run: an entry of `runs` (DPO or PPO family) and a seed."""
    input:
        data=rules.prepare_data.output,
        sft=rules.sft.output,
        reward=rules.reward_model.output.model,
        ref_logps=rules.reference_logps.output,
    output:
        **run_outputs("{run}", "{seed}"),
    params:
        cfg=lambda w: stage_config("train", run=w.run),
        data=f"{RESULTS}/data",
        workdir=f"{RESULTS}/work/{{run}}/seed{{seed}}",
    threads: CFG.threads
    priority: train_priority
    log:
        f"{RESULTS}/logs/train/{{run}}_seed{{seed}}.log",
    shell:
        "podyn train --config {params.cfg:q} --threads {threads} --run {wildcards.run} --seed {wildcards.seed}"
        " --data {params.data} --sft {input.sft} --reward {input.reward} --ref-logps {input.ref_logps}"
        " --workdir {params.workdir} --generations {output.generations} --checkpoints {output.checkpoints}"
        " --records {output.records} --metrics {output.metrics} --timing {output.timing} > {log} 2>&1"
