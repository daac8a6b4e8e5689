# Sampling: one job per entry of sampling.runs, plus sharpening and latent traversals.


rule sample:
    input:
        diffusion=run_model,
        vae=rules.train_vae.output.model,
        cache=rules.cache_latents.output.cache,
    output:
        samples=out("samples", "{run}", "samples.h5"),
        grid=out("samples", "{run}", "grid.png"),
        timing=out("samples", "{run}", "timing.json"),
    params:
        run=sampling_run,
        grid=section("sampling", "grid"),
        decode_batch_size=section("sampling", "decode_batch_size"),
    log:
        log_path("sample", "run"),
    benchmark:
        bench_path("sample", "run")
    threads: COMPUTE["gpu_threads"]
    resources:
        gpu=gpu_jobs(),
        mem_mb=8000,
        runtime=120,
    conda:
        ENV
    script:
        "../scripts/sample.py"


rule sharpen:
    input:
        unpack(classifier_inputs),
        dataset=dataset_path,
        diffusion=out("diffusion", "multibeta", "model.pt"),
        vae=rules.train_vae.output.model,
        cache=rules.cache_latents.output.cache,
    output:
        grid=out("figures", "sharpening.png"),
        metrics=out("metrics", "sharpen.json"),
    params:
        sharpen=section("sampling", "sharpen"),
    log:
        log_path("sharpen"),
    benchmark:
        bench_path("sharpen")
    threads: COMPUTE["gpu_threads"]
    resources:
        gpu=gpu_jobs(),
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/sharpen.py"


rule traverse:
    input:
        dataset=dataset_path,
        diffusion=out("diffusion", "multibeta", "model.pt"),
        vae=rules.train_vae.output.model,
        cache=rules.cache_latents.output.cache,
    output:
        dims=out("figures", "traversal_dims.png"),
        pca=out("figures", "traversal_pca.png"),
        ica=out("figures", "traversal_ica.png"),
    params:
        traverse=section("sampling", "traverse"),
        seed=lambda w: cfg(w)["metrics"]["seed"],
    log:
        log_path("traverse"),
    benchmark:
        bench_path("traverse")
    threads: COMPUTE["gpu_threads"]
    resources:
        gpu=gpu_jobs(),
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/traverse.py"
