# The report: metrics.json (every number) and report.md (tables and figures) per experiment,
# and a combined table when a sweep runs several experiments.


rule report:
    input:
        unpack(report_inputs),
    output:
        metrics=report(
            out("report", "metrics.json"), caption="../report/metrics_json.rst",
            category="6. Report", subcategory="{exp}", labels={"file": "metrics.json (every number)"},
        ),
        markdown=report(
            out("report", "report.md"), caption="../report/report_md.rst",
            category="6. Report", subcategory="{exp}", labels={"file": "report.md (tables and checks)"},
        ),
        curves=report(
            out("report", "metrics_vs_beta.png"), caption="../report/metrics_vs_beta.rst",
            category="5. Metrics", subcategory="{exp}", labels={"figure": "metrics against β"},
        ),
    params:
        # everything but `compute`, which never changes results
        config=lambda w: canonical({k: v for k, v in cfg(w).items() if k != "compute"}),
        benchmarks=lambda w: f"{RESULTS}/{w.exp}/benchmarks",
        shared_benchmarks=shared_benchmarks,
    log:
        log_path("report"),
    benchmark:
        bench_path("report")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/report.py"


rule sweep_report:
    input:
        metrics=[f"{RESULTS}/{exp}/report/metrics.json" for exp in EXPERIMENTS],
    output:
        markdown=report(
            f"{RESULTS}/sweep_report.md", caption="../report/sweep_report.rst",
            category="6. Report", subcategory="sweep", labels={"file": "sweep_report.md (experiments side by side)"},
        ),
    log:
        f"{RESULTS}/logs/sweep_report.log",
    threads: 1
    conda:
        ENV
    script:
        "../scripts/sweep_report.py"
