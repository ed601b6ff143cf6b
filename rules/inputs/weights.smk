# Input functions and helpers of rules/weights.smk (functions only: snakemake --lint keeps them apart from rules).


def weights_file(value: str) -> str:
    """The local file a config value naming weights stands for (maskless/models/registry.py): an existing
    path stays itself; a registry name (or one of config weights.extra) becomes <weights.cache>/<file>, which
    rule fetch_weights downloads. A name whose file is missing and whose host is unreachable stops the
    workflow here, before any job, with the URL to fetch by hand and the path to put it at.
    """
    section = config.get("weights") or {}
    return require_weights(value, section.get("cache", "weights"), section.get("extra"))


def pretrain_given():
    """The pretrain rule's input `given`, the cache file of a named pretrain.weights (a path is a param)."""
    value = config["pretrain"]["weights"]
    return {"given": weights_file(value)} if value and not os.path.isfile(value) else {}


def backbone_file(section, exp):
    """The backbone checkpoint of stego / freemask (config <section>.backbone): the pretrain stage's, or the
    file a path or named weight stands for (weights_file)."""
    value = config[section]["backbone"]
    return (
        f"results/{exp}/pretrain/backbone.pt"
        if value == "pretrain"
        else weights_file(value)
    )
