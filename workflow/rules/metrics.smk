# Metrics: the domain factor classifier, reference features, generation metrics per
# sampling run, reconstruction/disentanglement per cached level, fixed-beta baselines,
# and the pretrained-weights fetch for offline clusters.


localrules:
    fetch_weights,


rule fetch_weights:
    output:
        marker=f"{_BASE['metrics']['weights_dir']}/.fetched",
    params:
        metrics=lambda w: canonical(_BASE["metrics"]),
    log:
        f"{_BASE['metrics']['weights_dir']}/fetch_weights.log",
    conda:
        ENV
    script:
        "../scripts/fetch_weights.py"


rule train_factor_classifier:
    input:
        dataset=f"{RESULTS}/datasets/{{dataset}}/dataset.h5",
    output:
        model=f"{RESULTS}/datasets/{{dataset}}/factor_classifier-{{clf}}/model.pt",
        summary=f"{RESULTS}/datasets/{{dataset}}/factor_classifier-{{clf}}/accuracy.json",
    params:
        metrics=lambda w: canonical(CLASSIFIERS[(w.dataset, w.clf)]),
    wildcard_constraints:
        clf=r"[0-9a-f]+",
    log:
        f"{RESULTS}/datasets/{{dataset}}/factor_classifier-{{clf}}/train_factor_classifier.log",
    benchmark:
        f"{RESULTS}/datasets/{{dataset}}/factor_classifier-{{clf}}/train_factor_classifier.benchmark.tsv"
    threads: COMPUTE["gpu_threads"]
    resources:
        gpu=gpu_jobs(),
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/train_factor_classifier.py"


rule reference_features:
    input:
        unpack(feature_space_inputs),
        dataset=dataset_path,
    output:
        features=out("metrics", "reference", "{space}.pt"),
    params:
        metrics=subsection("metrics", "seed", "generation", "inception_weights", "download_timeout_s"),
    wildcard_constraints:
        space="inception|factor_classifier",
    log:
        log_path("reference_features", "space"),
    benchmark:
        bench_path("reference_features", "space")
    threads: COMPUTE["gpu_threads"]
    resources:
        gpu=gpu_jobs(),
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/reference_features.py"


rule generation_metrics:
    input:
        unpack(generation_inputs),
        samples=rules.sample.output.samples,
        timing=rules.sample.output.timing,
    output:
        metrics=out("metrics", "generation", "{run}.json"),
    params:
        metrics=subsection("metrics", "seed", "generation", "inception_weights", "download_timeout_s"),
        run=sampling_run,
    log:
        log_path("generation_metrics", "run"),
    benchmark:
        bench_path("generation_metrics", "run")
    threads: COMPUTE["gpu_threads"]
    resources:
        gpu=gpu_jobs(),
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/generation_metrics.py"


rule level_metrics:
    input:
        unpack(classifier_inputs),
        dataset=dataset_path,
        cache=rules.cache_latents.output.cache,
        vae=vae_model,
    output:
        metrics=out("metrics", "levels.json"),
    params:
        metrics=LEVEL_METRIC_PARAMS,
    log:
        log_path("level_metrics"),
    benchmark:
        bench_path("level_metrics")
    # scikit-learn estimators on CPU; the VAE decode/encode here is small, so no GPU is held
    threads: COMPUTE["cpu_threads"]
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/level_metrics.py"


rule baseline_metrics:
    input:
        unpack(classifier_inputs),
        dataset=dataset_path,
        baseline=rules.train_vae_baseline.output.model,
        vae=vae_model,
    output:
        metrics=out("metrics", "baselines", "beta{beta}.json"),
    params:
        metrics=LEVEL_METRIC_PARAMS,
    log:
        log_path("baseline_metrics", "beta"),
    benchmark:
        bench_path("baseline_metrics", "beta")
    # scikit-learn estimators on CPU; the VAE decode/encode here is small, so no GPU is held
    threads: COMPUTE["cpu_threads"]
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/baseline_metrics.py"
