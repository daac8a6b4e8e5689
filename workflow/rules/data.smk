# Dataset preparation: one HDF5 file per distinct `data` section, shared by experiments.


rule prepare_data:
    output:
        dataset=f"{RESULTS}/datasets/{{dataset}}/dataset.h5",
    params:
        data=lambda w: canonical(DATASETS[w.dataset]),
    log:
        f"{RESULTS}/datasets/{{dataset}}/prepare_data.log",
    benchmark:
        f"{RESULTS}/datasets/{{dataset}}/prepare_data.benchmark.tsv"
    threads: COMPUTE["cpu_threads"]
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/prepare_data.py"
