DATA_SPLITS = ["sft", "prefs_train", "prefs_heldout", "test"] + (
    ["judge_prefs"] if CFG.data.source != "synthetic" and CFG.data.roles.judge_prefs is not None else []
)


rule prepare_data:
    output:
        expand(f"{RESULTS}/data/{{split}}.jsonl", split=DATA_SPLITS),
    params:
        cfg=stage_config("prepare-data"),
        out=f"{RESULTS}/data",
    log:
        f"{RESULTS}/logs/prepare_data.log",
    shell:
        "podyn prepare-data --config {params.cfg:q} --out {params.out} > {log} 2>&1"
