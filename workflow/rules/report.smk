localrules:
    verdicts,


rule verdicts:
    input:
        expand(f"{RESULTS}/{{scenario}}/verdict.csv", scenario=list(SCENARIOS)),
    output:
        report(
            f"{RESULTS}/verdicts.csv",
            caption="../report/verdicts.rst",
            category="Verdicts",
        ),
    log:
        f"{RESULTS}/logs/report/verdicts.log",
    conda:
        "../envs/reluflow.yaml"
    shell:
        "reluflow verdicts --output {output} {input} > {log} 2>&1"
