# Shared by every rule: config validation (once), experiments, path helpers and the small
# input/params functions. Rules receive only the config sections they read, in canonical
# form, so a config edit reruns exactly the steps that depend on it.

import os
import sys
from pathlib import Path

_SRC = str(Path(workflow.main_snakefile).resolve().parent / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)
# Jobs (local or on a cluster node) inherit these: the package without installation, and
# no HDF5 file locking, which fails on many shared filesystems (all our writes are atomic).
_PYTHONPATH = [p for p in os.getenv("PYTHONPATH", "").split(os.pathsep) if p and p != _SRC]
os.environ["PYTHONPATH"] = os.pathsep.join([_SRC, *_PYTHONPATH])
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")


# Passed on to jobs on remote/cluster nodes (set just above, so always present).
envvars:
    "PYTHONPATH",
    "HDF5_USE_FILE_LOCKING",


from multibeta.bundle.layout import VAE_FILE as BUNDLE_VAE, denoiser_file as bundle_denoiser
from multibeta.sampling.config import DIRECTION_FAMILIES
from multibeta.workflow.config import ConfigError
from multibeta.workflow.experiments import canonical, classifier_id, data_identity, dataset_id, expand_experiments

try:
    EXPERIMENTS = expand_experiments(config)
except ConfigError as exc:
    raise WorkflowError(f"{exc}\n(see workflow/schemas/ for every option)") from None

_BASE = next(iter(EXPERIMENTS.values()))
RESULTS = _BASE["results_dir"]
COMPUTE = _BASE["compute"]
# dataset id -> what rule prepare_data receives (keys added later left out at their defaults)
DATASETS = {dataset_id(c["data"]): data_identity(c["data"]) for c in EXPERIMENTS.values()}
VARIANTS = ("multibeta", "noise_only", "standard_ldm")
ENV = "../../envs/multibeta.yaml"

# A lock on the results directory itself (Snakemake's own lock is per working directory):
# taken when jobs are about to run, dropped when the run ends either way.
onstart:
    from multibeta.workflow.results_lock import ResultsLockedError, acquire

    try:
        acquire(RESULTS)
    except ResultsLockedError as exc:
        raise WorkflowError(str(exc)) from None


onsuccess:
    from multibeta.workflow.results_lock import release

    release(RESULTS)


onerror:
    from multibeta.workflow.results_lock import release

    release(RESULTS)


wildcard_constraints:
    exp="|".join(sorted(EXPERIMENTS)),
    dataset=r"[A-Za-z0-9_.-]+",
    variant="|".join(VARIANTS),
    run=r"[A-Za-z0-9_-]+",
    beta=r"[0-9.]+",


def cfg(wildcards):
    """The validated config of the job's experiment."""
    return EXPERIMENTS[wildcards.exp]


def section(*keys):
    """A params function returning the canonical config section at ``keys`` for the job's experiment."""

    def get(wildcards):
        node = cfg(wildcards)
        for key in keys:
            node = node[key]
        return canonical(node)

    return get


def subsection(name, *keys):
    """A params function returning only ``keys`` of config section ``name`` (canonical).

    Scripts fill the remaining keys from the schema defaults, so a job reruns only when a
    key it actually reads changes.
    """

    def get(wildcards):
        node = cfg(wildcards)[name]
        return canonical({key: node[key] for key in keys})

    return get


def section_without(name, *keys):
    """A params function returning config section ``name`` minus ``keys`` (canonical)."""

    def get(wildcards):
        return canonical({k: v for k, v in cfg(wildcards)[name].items() if k not in keys})

    return get


# What VAE training reads: not the list of baselines, nor the held-out evaluation settings.
VAE_TRAIN_PARAMS = section_without("vae", "baseline_betas", "evaluation")

# What the reconstruction/disentanglement jobs read of the metrics section.
LEVEL_METRIC_PARAMS = subsection(
    "metrics", "seed", "levels", "rotations", "lpips_weights", "download_timeout_s",
    "reconstruction", "mig", "dci", "factorvae", "sap", "tad", "ica",
)


def out(*parts):
    """Path of an experiment output: results/<exp>/<parts...> (``{exp}`` stays a wildcard)."""
    return os.path.join(RESULTS, "{exp}", *parts)


def dataset_path(wildcards):
    """The prepared dataset an experiment reads."""
    return f"{RESULTS}/datasets/{dataset_id(cfg(wildcards)['data'])}/dataset.h5"


def gpu_jobs():
    """resources: gpu for GPU rules (compute.gpus_per_job; 0 on CPU-only clusters)."""
    return COMPUTE["gpus_per_job"]


def log_path(rule_name, *wildcard_names):
    """results/<exp>/logs/<rule>[_<wildcards>].log"""
    suffix = "".join(f"_{{{w}}}" for w in wildcard_names)
    return out("logs", f"{rule_name}{suffix}.log")


def bench_path(rule_name, *wildcard_names):
    """results/<exp>/benchmarks/<rule>[_<wildcards>].tsv"""
    suffix = "".join(f"_{{{w}}}" for w in wildcard_names)
    return out("benchmarks", f"{rule_name}{suffix}.tsv")


def sampling_run(wildcards):
    """The sampling.runs entry named by the {run} wildcard."""
    for entry in cfg(wildcards)["sampling"]["runs"]:
        if entry["name"] == wildcards.run:
            return canonical(entry)
    raise WorkflowError(f"no sampling run named '{wildcards.run}' in experiment '{wildcards.exp}'")


def run_names(exp):
    return [entry["name"] for entry in EXPERIMENTS[exp]["sampling"]["runs"]]


def variants_of(exp):
    """Diffusion variants an experiment trains: those its sampling runs use."""
    used = {entry["variant"] for entry in EXPERIMENTS[exp]["sampling"]["runs"]}
    used.update(EXPERIMENTS[exp]["diffusion"]["variants"])
    return [v for v in VARIANTS if v in used]


_HAS_FACTORS = {}


def has_factors(exp):
    """Whether the experiment's data has ground-truth factors: the factor classifier, edit
    directions and per-factor metrics run (dSprites, Shapes3D, MPI3D; an image folder whose CSV
    has factor columns, read once here)."""
    from multibeta.data.prepare import has_factors as data_has_factors

    data = EXPERIMENTS[exp]["data"]
    key = dataset_id(data)
    if key not in _HAS_FACTORS:
        _HAS_FACTORS[key] = data_has_factors(data)
    return _HAS_FACTORS[key]


for _exp, _cfg in EXPERIMENTS.items():
    if "factor_classifier" in _cfg["metrics"]["generation"]["feature_spaces"] and not has_factors(_exp):
        raise WorkflowError(
            f"invalid config at 'metrics.generation.feature_spaces' (experiment {_exp}): factor_classifier "
            f"needs ground-truth factors, and the labels CSV of data.folder ({_cfg['data']['folder']['labels']}) "
            "has no factor column (an integer column that is not 0/1). Use [inception], or add factor columns."
        )


def baseline_betas(exp):
    return [f"{b:g}" for b in EXPERIMENTS[exp]["vae"]["baseline_betas"]]


def experiment_targets(exp):
    """Everything `rule all` builds for one experiment."""
    return [
        f"{RESULTS}/{exp}/report/report.md",
        f"{RESULTS}/{exp}/report/metrics.json",
        f"{RESULTS}/{exp}/bundle",
    ]


def all_targets():
    targets = [t for exp in EXPERIMENTS for t in experiment_targets(exp)]
    if len(EXPERIMENTS) > 1:
        targets.append(f"{RESULTS}/sweep_report.md")
    return targets


def from_bundle(exp):
    """The bundle folder an experiment starts from, or None (it trains its own models)."""
    return EXPERIMENTS[exp]["bundle"]


def trained_file(exp, in_bundle, in_results):
    """A trained model or its training record: the bundle's copy (``in_bundle``, relative to the
    bundle) for an experiment started from one, else the training rule's output (``in_results``,
    relative to results/<exp>)."""
    bundle = from_bundle(exp)
    return f"{bundle}/{in_bundle}" if bundle else f"{RESULTS}/{exp}/{in_results}"


def vae_model(wildcards):
    """The multi-β VAE checkpoint: trained by rule train_vae, or the bundle's."""
    return trained_file(wildcards.exp, BUNDLE_VAE, "vae/model.pt")


def vae_log(wildcards):
    """The VAE's training log (for its plots): train_vae's, or the copy in the bundle."""
    return trained_file(wildcards.exp, "training/vae_train_log.csv", "vae/train_log.csv")


def denoiser_path(exp, variant):
    return trained_file(exp, bundle_denoiser(variant), f"diffusion/{variant}/model.pt")


def denoiser_file(exp, variant, name):
    """A training record of a denoiser (train_log.csv, loss_curves.png), or the bundle's copy."""
    return trained_file(exp, f"training/{variant}_{name}", f"diffusion/{variant}/{name}")


def multibeta_denoiser(wildcards):
    """The multibeta denoiser (sharpening, traversals, edits)."""
    return denoiser_path(wildcards.exp, "multibeta")


def bundle_files(wildcards):
    """Every file a bundle's manifest lists (read at DAG time, no hashing), and the manifest:
    rule verify_bundle reruns when any of them changes."""
    from multibeta.bundle.manifest import MANIFEST, read_manifest

    bundle = from_bundle(wildcards.exp)
    return [f"{bundle}/{MANIFEST}"] + [f"{bundle}/{rel}" for rel in sorted(read_manifest(bundle)["files"])]


def bundle_check(wildcards):
    """``{"bundle_check": ...}`` (rule verify_bundle's stamp) for an experiment started from a
    bundle, so the files are checked before the first job reads them; else nothing."""
    return {"bundle_check": f"{RESULTS}/{wildcards.exp}/bundle_verified.json"} if from_bundle(wildcards.exp) else {}


def run_model(wildcards):
    """The diffusion checkpoint of the variant a sampling run uses."""
    return denoiser_path(wildcards.exp, sampling_run(wildcards)["variant"])


# One factor classifier per dataset and classifier config, shared by every experiment that
# uses both (it depends only on the data): results/datasets/<id>/factor_classifier-<hash>/.
CLASSIFIERS = {
    (dataset_id(c["data"]), classifier_id(c).removeprefix("factor_classifier-")):
        {"seed": c["metrics"]["seed"], "factor_classifier": c["metrics"]["factor_classifier"]}
    for e, c in EXPERIMENTS.items() if has_factors(e)
}


def classifier_dir(wildcards):
    """Folder of the factor classifier an experiment uses."""
    exp_cfg = cfg(wildcards)
    return f"{RESULTS}/datasets/{dataset_id(exp_cfg['data'])}/{classifier_id(exp_cfg)}"


def classifier_model(wildcards):
    return f"{classifier_dir(wildcards)}/model.pt"


def classifier_inputs(wildcards):
    """``{"classifier": model.pt}`` for data with factors (:func:`has_factors`), else nothing."""
    return {"classifier": classifier_model(wildcards)} if has_factors(wildcards.exp) else {}


def shared_benchmarks(wildcards):
    """Benchmark files of the dataset-level jobs an experiment uses (data, factor classifier)."""
    data_dir = f"{RESULTS}/datasets/{dataset_id(cfg(wildcards)['data'])}"
    files = [f"{data_dir}/prepare_data.benchmark.tsv"]
    if has_factors(wildcards.exp):
        files.append(f"{classifier_dir(wildcards)}/train_factor_classifier.benchmark.tsv")
    return files


def feature_space_inputs(wildcards):
    """The factor classifier, for the feature space that needs it."""
    if wildcards.space == "factor_classifier":
        return {"classifier": classifier_model(wildcards)}
    return {}


def generation_inputs(wildcards):
    spaces = cfg(wildcards)["metrics"]["generation"]["feature_spaces"]
    inputs = {
        f"reference_{space}": f"{RESULTS}/{wildcards.exp}/metrics/reference/{space}.pt"
        for space in spaces
    }
    inputs.update(classifier_inputs(wildcards))
    if has_factors(wildcards.exp):
        inputs["dataset"] = dataset_path(wildcards)
    return inputs


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
        "figures": [f"{base}/figures/{f}.png"
                    for f in ("sharpening", "traversal_dims", "traversal_pca", "traversal_ica")],
        "sharpen_metrics": f"{base}/metrics/sharpen.json",
        "edits": [f"{base}/metrics/edits.json"] if has_factors(exp) else [],
        "edit_figures": [f"{base}/figures/{f}.png" for f in
                         ["edit_scores", *(f"edits_{fam}" for fam in DIRECTION_FAMILIES)]]
        if has_factors(exp) else [],
        "diffusion_losses": [denoiser_file(exp, v, "loss_curves.png") for v in variants_of(exp)],
    }
    if has_factors(exp):
        inputs["classifier"] = f"{classifier_dir(wildcards)}/accuracy.json"
    return inputs


def bundle_inputs(wildcards):
    """The inputs of export_bundle (the VAE, each denoiser with its training records, the
    latent cache for the σ_t table, start distribution and directions, and the report's numbers)."""
    exp = wildcards.exp
    base = f"{RESULTS}/{exp}"
    inputs = {
        "vae": vae_model(wildcards),
        "vae_log": vae_log(wildcards),
        "cache": f"{base}/cache/latents.h5",
        "metrics": f"{base}/report/metrics.json",
    }
    # multibeta always: sharpening, traversals and edits use it even when not among the variants
    for v in sorted(set(variants_of(exp)) | {"multibeta"}, key=VARIANTS.index):
        inputs[f"denoiser_{v}"] = denoiser_path(exp, v)
        inputs[f"log_{v}"] = denoiser_file(exp, v, "train_log.csv")
        inputs[f"losses_{v}"] = denoiser_file(exp, v, "loss_curves.png")
    return inputs

