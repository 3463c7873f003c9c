# podyn: what preference optimization does while it trains, and why.
# The rules live in workflow/rules/, one file per stage; each calls a `podyn` entry point.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/preference.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/dynamics.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/robustness.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        final_targets(),
