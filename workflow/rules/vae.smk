# Stage 1: the multi-beta VAE, its diagnostic plots, and the fixed-beta baselines.


rule train_vae:
    input:
        dataset=dataset_path,
    output:
        model=out("vae", "model.pt"),
        log_csv=out("vae", "train_log.csv"),
    params:
        vae=VAE_TRAIN_PARAMS,
    log:
        log_path("train_vae"),
    benchmark:
        bench_path("train_vae")
    threads: COMPUTE["gpu_threads"]
    resources:
        gpu=gpu_jobs(),
        mem_mb=8000,
        runtime=1440,  # minutes; training resumes from its checkpoint if a job is cut off
    conda:
        ENV
    script:
        "../scripts/train_vae.py"


rule vae_plots:
    input:
        unpack(bundle_check),
        dataset=dataset_path,
        model=vae_model,
        log_csv=vae_log,
    output:
        losses=report(
            out("vae", "plots", "loss_terms.png"), caption="../report/vae_loss_terms.rst",
            category="1. VAE", subcategory="{exp}", labels={"figure": "training losses"},
        ),
        sigma=report(
            out("vae", "plots", "sigma_vs_beta.png"), caption="../report/vae_sigma_vs_beta.rst",
            category="1. VAE", subcategory="{exp}", labels={"figure": "σ_t against β"},
        ),
        tradeoff=report(
            out("vae", "plots", "kl_rec_vs_beta.png"), caption="../report/vae_kl_rec_vs_beta.rst",
            category="1. VAE", subcategory="{exp}", labels={"figure": "KL and reconstruction against β"},
        ),
        recon=report(
            out("vae", "plots", "recon_grid.png"), caption="../report/vae_recon_grid.rst",
            category="1. VAE", subcategory="{exp}", labels={"figure": "reconstructions per β"},
        ),
        levels=out("vae", "level_stats.json"),
    params:
        vae=section_without("vae", "baseline_betas"),
    log:
        log_path("vae_plots"),
    benchmark:
        bench_path("vae_plots")
    threads: COMPUTE["cpu_threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV
    script:
        "../scripts/vae_plots.py"


rule train_vae_baseline:
    input:
        dataset=dataset_path,
    output:
        model=out("vae_baselines", "beta{beta}", "model.pt"),
        log_csv=out("vae_baselines", "beta{beta}", "train_log.csv"),
    params:
        vae=VAE_TRAIN_PARAMS,
    log:
        log_path("train_vae_baseline", "beta"),
    benchmark:
        bench_path("train_vae_baseline", "beta")
    threads: COMPUTE["gpu_threads"]
    resources:
        gpu=gpu_jobs(),
        mem_mb=8000,
        runtime=1440,  # minutes; training resumes from its checkpoint if a job is cut off
    conda:
        ENV
    script:
        "../scripts/train_vae.py"
