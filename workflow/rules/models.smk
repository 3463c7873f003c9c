rule base_model:
    output:
        directory(f"{RESULTS}/models/base"),
    params:
        cfg=stage_config("base-model"),
    log:
        f"{RESULTS}/logs/base_model.log",
    shell:
        "podyn base-model --config {params.cfg:q} --out {output} > {log} 2>&1"


rule sft:
    input:
        data=rules.prepare_data.output,
        base=rules.base_model.output,
    output:
        directory(f"{RESULTS}/models/sft"),
    params:
        cfg=stage_config("sft"),
        data=f"{RESULTS}/data",
        workdir=f"{RESULTS}/work/sft",
    threads: SERIAL_THREADS
    log:
        f"{RESULTS}/logs/sft.log",
    shell:
        "podyn sft --config {params.cfg:q} --threads {threads} --data {params.data} --base {input.base}"
        " --out {output} --workdir {params.workdir} > {log} 2>&1"


rule reward_model:
    input:
        data=rules.prepare_data.output,
        sft=rules.sft.output,
    output:
        model=directory(f"{RESULTS}/models/reward"),
        metrics=f"{RESULTS}/eval/reward_model.csv",
    params:
        cfg=stage_config("reward-model"),
        data=f"{RESULTS}/data",
        workdir=f"{RESULTS}/work/reward_model",
    threads: SERIAL_THREADS
    log:
        f"{RESULTS}/logs/reward_model.log",
    shell:
        "podyn reward-model --config {params.cfg:q} --threads {threads} --data {params.data} --sft {input.sft}"
        " --out {output.model} --metrics {output.metrics} --workdir {params.workdir} > {log} 2>&1"


rule reference_logps:
    input:
        data=rules.prepare_data.output,
        sft=rules.sft.output,
    output:
        f"{RESULTS}/cache/ref_logps.pt",
    params:
        cfg=stage_config("reference-logps"),
        data=f"{RESULTS}/data",
    threads: SERIAL_THREADS
    log:
        f"{RESULTS}/logs/reference_logps.log",
    shell:
        "podyn reference-logps --config {params.cfg:q} --threads {threads} --data {params.data} --sft {input.sft}"
        " --out {output} > {log} 2>&1"
