# Stage 2: the latent denoiser, one model per variant (multibeta, noise_only, standard_ldm).


rule train_diffusion:
    input:
        cache=rules.cache_latents.output.cache,
    output:
        model=out("diffusion", "{variant}", "model.pt"),
        log_csv=out("diffusion", "{variant}", "train_log.csv"),
        losses=report(
            out("diffusion", "{variant}", "loss_curves.png"), caption="../report/diffusion_losses.rst",
            category="2. Diffusion", subcategory="{exp}", labels={"denoiser": "{variant}"},
        ),
    params:
        diffusion=section("diffusion"),
    log:
        log_path("train_diffusion", "variant"),
    benchmark:
        bench_path("train_diffusion", "variant")
    # small MLP: on CPU one thread is fastest (more threads only contend); GPUs ignore it
    threads: 1
    resources:
        gpu=gpu_jobs(),
        mem_mb=8000,
        runtime=1440,  # minutes; training resumes from its checkpoint if a job is cut off
    conda:
        ENV
    script:
        "../scripts/train_diffusion.py"
