# reluflow: regenerate every theorem's scenario, from config/config.yaml to figures.
#   snakemake --cores 2                          # default configuration
#   snakemake --cores 2 --configfile config/test.yaml
#   snakemake --report results/report.html      # HTML report with the figures and captions
# Rules are thin: each calls the `reluflow` command line with its own slice of the configuration.


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


# names are validated (reluflow.experiments.config.NAME_PATTERN): paths stay inside results/
wildcard_constraints:
    scenario="[a-z][a-z0-9_]*",
    case="[a-z][a-z0-9_]*",
    flow="[a-z][a-z0-9_]*",
    batch="[0-9]{3}",


include: "workflow/rules/init.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        final_targets(),
