localrules:
    aggregate,


rule aggregate:
    input:
        trajectory_files,
    output:
        summary=f"{RESULTS}/{{scenario}}/summary.csv",
        verdict=f"{RESULTS}/{{scenario}}/verdict.csv",
    log:
        f"{RESULTS}/logs/aggregate/{{scenario}}.log",
    conda:
        "../envs/reluflow.yaml"
    params:
        spec=scenario_slice,
    shell:
        "reluflow summarize --spec {params.spec:q} --summary {output.summary}"
        " --verdict {output.verdict} {input} > {log} 2>&1"
