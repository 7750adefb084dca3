rule simulate:
    input:
        f"{RESULTS}/{{scenario}}/init/{{case}}/batch{{batch}}.nc",
    output:
        f"{RESULTS}/{{scenario}}/trajectories/{{case}}/{{flow}}/batch{{batch}}.nc",
    log:
        f"{RESULTS}/logs/simulate/{{scenario}}/{{case}}/{{flow}}/batch{{batch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/simulate/{{scenario}}/{{case}}/{{flow}}/batch{{batch}}.tsv"
    conda:
        "../envs/reluflow.yaml"
    threads: 1
    resources:
        mem_mb=simulate_mem_mb,
        runtime=simulate_runtime,
    params:
        spec=flow_slice,
    shell:
        "reluflow simulate --init {input} --spec {params.spec:q} --output {output} --progress > {log} 2>&1"
