# Named weights (config `weights`, maskless/models/registry.py): a name in pretrain.weights (or a backbone's
# weights) stands for <weights.cache>/<file>, which rule fetch_weights downloads, hash checked and renamed
# into place. Without network the workflow stops while it is parsed (weights_file, rules/common.smk).


include: "inputs/weights.smk"


# file name -> entry (file names are unique in the registry; a user entry replaces one of the same file)
FETCHABLE_WEIGHTS = {
    e["file"]: e for e in registry_entries(config["weights"]["extra"]).values()
}


rule fetch_weights:
    output:
        f"{config['weights']['cache']}/{{weights_file}}",
    log:
        f"results/{EXP}/logs/fetch_weights/{{weights_file}}.log",
    wildcard_constraints:
        weights_file="|".join(re.escape(f) for f in FETCHABLE_WEIGHTS),
    # On a cluster the compute nodes often have no network: download where Snakemake runs.
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=120,
    params:
        entry=lambda wc: FETCHABLE_WEIGHTS[wc.weights_file],  # url, file, sha256 (or sha256_prefix): what is fetched
        timeout=60,
    script:
        "../stages/fetch_weights.py"
