# Denoising Multi-beta VAE (arXiv 2507.06613): the pipeline's table of contents.
#   snakemake --cores 8 --resources gpu=1                 # default config.yaml
#   snakemake --cores 2 --configfile tests/configs/tiny.yaml
# Stages: data -> vae -> cache -> diffusion -> sampling -> metrics -> report.

from snakemake.utils import min_version

min_version("9.0")


# config.yaml is the default; a --configfile replaces it rather than being merged over it,
# so an experiment config never inherits stray keys (e.g. a sweep) from config.yaml.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# The HTML report (`snakemake --report report.html` after a run): this text opens it, every
# figure is registered with report() on its rule's output, its caption in workflow/report/.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/vae.smk"
include: "workflow/rules/cache.smk"
include: "workflow/rules/diffusion.smk"
include: "workflow/rules/sampling.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/bundle.smk"


rule all:
    input:
        all_targets(),
    default_target: True
