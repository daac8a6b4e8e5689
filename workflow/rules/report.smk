# The report: metrics.json (every number) and report.md (tables and figures) per experiment,
# and a combined table when a sweep runs several experiments.


def report_inputs(wildcards):
    exp = wildcards.exp
    base = f"{RESULTS}/{exp}"
    runs = run_names(exp)
    inputs = {
        "generation": [f"{base}/metrics/generation/{r}.json" for r in runs],
        "sample_grids": [f"{base}/samples/{r}/grid.png" for r in runs],
        "levels": f"{base}/metrics/levels.json",
        "baselines": [f"{base}/metrics/baselines/beta{b}.json" for b in baseline_betas(exp)],
        "vae_levels": f"{base}/vae/level_stats.json",
        "vae_plots": [f"{base}/vae/plots/{p}.png" for p in
                      ("loss_terms", "sigma_vs_beta", "kl_rec_vs_beta", "recon_grid")],
        "figures": [f"{base}/figures/{f}.png" for f in ("sharpening", "traversal_dims", "traversal_pca")],
        "diffusion_losses": [f"{base}/diffusion/{v}/loss_curves.png" for v in variants_of(exp)],
    }
    if "factor_classifier" in EXPERIMENTS[exp]["metrics"]["generation"]["feature_spaces"]:
        inputs["classifier"] = f"{base}/metrics/factor_classifier.json"
    return inputs


rule report:
    input:
        unpack(report_inputs),
    output:
        metrics=out("report", "metrics.json"),
        markdown=report(out("report", "report.md"), category="Report"),
        curves=report(out("report", "metrics_vs_beta.png"), category="Report"),
    params:
        config=lambda w: canonical(cfg(w)),
        benchmarks=lambda w: f"{RESULTS}/{w.exp}/benchmarks",
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
        markdown=report(f"{RESULTS}/sweep_report.md", category="Report"),
    log:
        f"{RESULTS}/logs/sweep_report.log",
    threads: 1
    conda:
        ENV
    script:
        "../scripts/sweep_report.py"
