rule prepare_data:
    output:
        expand(f"{RESULTS}/data/{{split}}.jsonl", split=["sft", "prefs_train", "prefs_heldout", "test"]),
    params:
        cfg=stage_config("prepare-data"),
        out=f"{RESULTS}/data",
    log:
        f"{RESULTS}/logs/prepare_data.log",
    shell:
        "podyn prepare-data --config {params.cfg:q} --out {params.out} > {log} 2>&1"
