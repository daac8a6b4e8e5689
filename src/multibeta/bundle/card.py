"""The model card of a bundle: what was trained on what, how long, how well, and for what use."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def headline_metrics(metrics: dict[str, Any] | None) -> list[str]:
    """Markdown table rows of the report's headline numbers (empty without a report)."""
    if not metrics:
        return ["No report was given at export time: no measured numbers."]
    rows = ["| what | value |", "|---|---|"]
    levels = metrics.get("levels", {}).get("levels", [])
    if levels:
        first = levels[0]
        for key in ("mse", "psnr", "recon_accuracy", "recon_iou_to_input"):
            if key in first:
                rows.append(f"| t = 0 reconstruction: {key} | {_fmt(first[key])} |")
    for run, doc in sorted(metrics.get("generation", {}).items()):
        spec = doc.get("run", {})
        label = f"{run} ({spec.get('variant')}, {spec.get('solver')}, {spec.get('steps')} steps)"
        for space in ("inception", "factor_classifier"):
            if isinstance(doc.get(space), dict) and "fid" in doc[space]:
                name = "FID" if space == "inception" else "domain FD"
                rows.append(f"| samples {label}: {name} | {_fmt(doc[space]['fid'])} |")
        render = doc.get("render", {})
        if "valid_fraction" in render:
            rows.append(f"| samples {label}: valid shapes | {_fmt(render['valid_fraction'])} |")
    return rows


def model_card(
    experiment: str,
    config: dict[str, Any],
    metrics: dict[str, Any] | None,
    variants: list[str],
    versions: dict[str, Any],
    trained_versions: dict[str, Any] | None = None,
) -> str:
    """The bundle's ``MODEL_CARD.md`` (Markdown).

    Args:
        versions: of the export (``collect_versions()`` at export time).
        trained_versions: recorded in the VAE checkpoint when it was trained.
    """
    trained = trained_versions or {}
    where = f"CUDA {trained['cuda']}" if trained.get("cuda") else "the CPU"
    data, vae, diff = config.get("data", {}), config.get("vae", {}), config.get("diffusion", {})
    dataset = data.get("name", "?")
    side = data.get("image_size", 64)
    lines = [
        f"# Model card: multibeta experiment `{experiment}`",
        "",
        "A Denoising Multi-β VAE (arXiv 2507.06613) as implemented by multibeta: one β-conditioned",
        "VAE whose latents at level t ∈ [0, 1] go from near-lossless (t = 0) to disentangled and",
        "blurred (t = 1), and latent denoisers that map a latent at level t back to t = 0.",
        "",
        "## Data",
        f"- dataset: {dataset}, {data.get('size') or 'all'} images of {side}×{side}, seed {data.get('seed')}"
        f" (validation fraction {data.get('val_fraction')}).",
        "",
        "## Training budget",
        f"- VAE: {vae.get('steps')} steps of batch {vae.get('batch_size')}, latent dimension "
        f"{vae.get('latent_dim')}, β from {vae.get('beta_min')} to {vae.get('beta_max')}, "
        f"σ schedule {vae.get('sigma_schedule')}, reconstruction {vae.get('reconstruction')}.",
        f"- denoisers ({', '.join(variants)}): {diff.get('steps')} steps of batch "
        f"{diff.get('batch_size')}, width {diff.get('width')}, depth {diff.get('depth')}.",
        f"- trained with multibeta {trained.get('multibeta')} (git {trained.get('git_commit')}), "
        f"torch {trained.get('torch')}, Python {trained.get('python')}, on {where} (the VAE "
        "checkpoint's record); exported with multibeta "
        f"{versions.get('multibeta')} (git {versions.get('git_commit')}).",
        "",
        "## Measured (the experiment's report)",
        *headline_metrics(metrics),
        "",
        "## Intended use",
        "- Research on representation learning and latent diffusion: encode images at a level t,",
        "  decode, sample, sharpen blurred high-β reconstructions by denoising to t = 0, interpolate",
        "  and edit in the latent space (`multibeta sample | sharpen | interpolate | edit`).",
        "- Reproducing and extending the pipeline's numbers; comparing samplers and directions.",
        "",
        "## Limits",
        f"- Trained only on {dataset} at {side}×{side}; images of other kinds are encoded, but their",
        "  latents lie outside what the models saw and decodings are meaningless.",
        "- The numbers above are the experiment's own, at its budget; the repository's",
        "  docs/RESULTS.md says which targets the default budgets meet and which they miss.",
        "- Not for decisions about people (CelebA attributes are noisy, biased labels).",
        "",
        "## Loading",
        "```python",
        "from multibeta.api import MultiBeta",
        "mb = MultiBeta.load('path/to/bundle')   # checks every file's SHA-256 first",
        f"images = mb.sample(16)                  # [16, C, {side}, {side}] in [0, 1]",
        "```",
    ]
    return "\n".join(lines) + "\n"
