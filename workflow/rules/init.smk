rule init:
    output:
        f"{RESULTS}/{{scenario}}/init/{{case}}/batch{{batch}}.nc",
    log:
        f"{RESULTS}/logs/init/{{scenario}}/{{case}}/batch{{batch}}.log",
    conda:
        "../envs/reluflow.yaml"
    params:
        spec=init_slice,
    shell:
        "reluflow init --spec {params.spec:q} --batch {wildcards.batch} --output {output} > {log} 2>&1"
