DATA_SPLITS = ["sft", "prefs_train", "prefs_heldout", "test"] + (
    ["judge_prefs"] if config["data"]["source"] != "synthetic" and config["data"]["roles"].get("judge_prefs") else []
)


rule prepare_data:
    output:
        expand(f"{RESULTS}/data/{{split}}.jsonl", split=DATA_SPLITS),
    params:
        # the model's tokenizer renders message lists only with data.render: chat_template
        cfg=stage_config("seed", "data", *(["model"] if config["data"]["render"] == "chat_template" else [])),
        out=f"{RESULTS}/data",
    log:
        f"{RESULTS}/logs/prepare_data.log",
    shell:
        "podyn prepare-data --config {params.cfg:q} --out {params.out} > {log} 2>&1"
