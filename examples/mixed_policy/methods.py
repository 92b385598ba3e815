"""The methods by name: each one's trainer and config class (imported on demand, TRL is heavy)."""
import importlib

METHODS = {  # name: (module, trainer class, config class or None for TRL's GRPOConfig)
    "grpo": ("trainer", "MixedPolicyTrainer", None),
    "luffy": ("luffy", "LuffyTrainer", "LuffyConfig"),
    "srft": ("srft", "SrftTrainer", "SrftConfig"),
    "relift": ("relift", "ReliftTrainer", "ReliftConfig"),
    "hpt": ("hpt", "HptTrainer", "HptConfig"),
    "prefix_rft": ("prefix_rft", "PrefixRftTrainer", "PrefixRftConfig"),
    "bridge": ("bridge", "BridgeTrainer", "BridgeConfig"),
}


def load(name):
    """(trainer class, config class) of a method."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; one of {', '.join(METHODS)}")
    module_name, trainer_name, config_name = METHODS[name]
    module = importlib.import_module(f"{__package__}.{module_name}")
    if config_name is None:
        from trl import GRPOConfig
        return getattr(module, trainer_name), GRPOConfig
    return getattr(module, trainer_name), getattr(module, config_name)


def own_fields(config_class):
    """The dataclass fields a method's config adds to GRPOConfig: name -> (default, help)."""
    import dataclasses
    from trl import GRPOConfig
    inherited = {f.name for f in dataclasses.fields(GRPOConfig)}
    return {f.name: (f.default, f.metadata.get("help", "")) for f in dataclasses.fields(config_class)
            if f.name not in inherited}
