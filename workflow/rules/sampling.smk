# Sampling: one job per entry of sampling.runs, plus sharpening and latent traversals.


rule sample:
    input:
        diffusion=run_model,
        vae=vae_model,
        cache=rules.cache_latents.output.cache,
    output:
        samples=out("samples", "{run}", "samples.h5"),
        grid=report(
            out("samples", "{run}", "grid.png"), caption="../report/samples.rst",
            category="3. Sampling", subcategory="{exp}",
            labels=lambda w: {"sampling run": "{name}: {variant}, {solver}, {steps} steps, η={eta:g}".format(
                **sampling_run(w))},
        ),
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
        diffusion=multibeta_denoiser,
        vae=vae_model,
        cache=rules.cache_latents.output.cache,
    output:
        grid=report(
            out("figures", "sharpening.png"), caption="../report/sharpening.rst",
            category="4. Editing", subcategory="{exp}", labels={"figure": "sharpening"},
        ),
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
        diffusion=multibeta_denoiser,
        vae=vae_model,
        cache=rules.cache_latents.output.cache,
    output:
        dims=report(
            out("figures", "traversal_dims.png"), caption="../report/traversal_dims.rst",
            category="4. Editing", subcategory="{exp}", labels={"figure": "traversal: latent dimensions"},
        ),
        pca=report(
            out("figures", "traversal_pca.png"), caption="../report/traversal_pca.rst",
            category="4. Editing", subcategory="{exp}", labels={"figure": "traversal: PCA directions"},
        ),
        ica=report(
            out("figures", "traversal_ica.png"), caption="../report/traversal_ica.rst",
            category="4. Editing", subcategory="{exp}", labels={"figure": "traversal: ICA directions"},
        ),
    params:
        traverse=section("sampling", "traverse"),
        seed=lambda w: cfg(w)["metrics"]["seed"],
        ica=section("metrics", "ica"),
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


rule edit_directions:
    input:
        dataset=dataset_path,
        classifier=classifier_model,
        diffusion=multibeta_denoiser,
        vae=vae_model,
        cache=rules.cache_latents.output.cache,
    output:
        metrics=out("metrics", "edits.json"),
        scores=report(
            out("figures", "edit_scores.png"), caption="../report/edit_scores.rst",
            category="4. Editing", subcategory="{exp}", labels={"figure": "edit selectivity per factor"},
        ),
        **{
            f"grid_{family}": report(
                out("figures", f"edits_{family}.png"), caption="../report/edits_family.rst",
                category="4. Editing", subcategory="{exp}", labels={"figure": f"edits: {family} directions"},
            )
            for family in DIRECTION_FAMILIES
        },
    params:
        directions=section("sampling", "directions"),
        seed=lambda w: cfg(w)["metrics"]["seed"],
        ica=section("metrics", "ica"),
    log:
        log_path("edit_directions"),
    benchmark:
        bench_path("edit_directions")
    threads: COMPUTE["gpu_threads"]
    resources:
        gpu=gpu_jobs(),
        mem_mb=4000,
        runtime=120,
    conda:
        ENV
    script:
        "../scripts/edit_directions.py"
