# The HDF5 latent cache: mu_t(x) for every image at the configured levels.


rule cache_latents:
    input:
        unpack(bundle_check),
        dataset=dataset_path,
        model=vae_model,
    output:
        cache=out("cache", "latents.h5"),
    params:
        cache=section("cache"),
    log:
        log_path("cache_latents"),
    benchmark:
        bench_path("cache_latents")
    threads: COMPUTE["gpu_threads"]
    resources:
        gpu=gpu_jobs(),
        mem_mb=8000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/cache_latents.py"
