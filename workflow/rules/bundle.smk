# Export a trained experiment as one self-contained, verifiable bundle (models, σ_t table, start
# distribution, edit directions, config, versions, model card, SHA-256 of every file).


rule export_bundle:
    input:
        unpack(bundle_inputs),
    output:
        bundle=directory(out("bundle")),
    params:
        # everything but `compute`, which never changes results
        config=lambda w: canonical({k: v for k, v in cfg(w).items() if k != "compute"}),
    log:
        log_path("export_bundle"),
    benchmark:
        bench_path("export_bundle")
    # the ICA edit directions' FastICA starts run in as many processes
    threads: COMPUTE["cpu_threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV
    script:
        "../scripts/export_bundle.py"


rule verify_bundle:
    input:
        bundle_files,
    output:
        stamp=out("bundle_verified.json"),
    params:
        bundle=lambda w: from_bundle(w.exp),
    log:
        log_path("verify_bundle"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    conda:
        ENV
    script:
        "../scripts/verify_bundle.py"
