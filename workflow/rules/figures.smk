localrules:
    figure,


rule figure:
    input:
        trajectories=trajectory_files,
        summary=f"{RESULTS}/{{scenario}}/summary.csv",
        verdict=f"{RESULTS}/{{scenario}}/verdict.csv",
    output:
        pdf=report(
            f"{RESULTS}/figures/{{scenario}}.pdf",
            caption="../report/figure.rst",
            category="Figures",
        ),
        png=report(
            f"{RESULTS}/figures/{{scenario}}.png",
            caption="../report/figure.rst",
            category="Figures (PNG)",
        ),
    log:
        f"{RESULTS}/logs/figures/{{scenario}}.log",
    conda:
        "../envs/reluflow.yaml"
    params:
        spec=scenario_slice,
        caption=figure_caption,
    shell:
        "reluflow figure --spec {params.spec:q} --summary {input.summary} --verdict {input.verdict}"
        " --pdf {output.pdf} --png {output.png} {input.trajectories} > {log} 2>&1"


localrules:
    animate,


rule animate:
    input:
        case_trajectory_files,
    output:
        report(
            f"{RESULTS}/figures/{{scenario}}/{{case}}.gif",
            caption="../report/animation.rst",
            category="Animations",
        ),
    log:
        f"{RESULTS}/logs/figures/{{scenario}}/{{case}}.animate.log",
    conda:
        "../envs/reluflow.yaml"
    params:
        spec=scenario_slice,
    shell:
        "reluflow animate --spec {params.spec:q} --case {wildcards.case} --output {output} {input} > {log} 2>&1"
