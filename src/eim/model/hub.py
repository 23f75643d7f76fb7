"""Resolving model ids offline: local folders first, then the paper's known configs, then the hub."""

from pathlib import Path

from transformers import AutoConfig

from eim.errors import ConfigError
from eim.model.known_configs import known_config


def resolve_config(name_or_path, config_cls=None, trust_remote_code=False):
    """Config for ``name_or_path``: a local folder, a known reference architecture, or the hub."""
    if Path(name_or_path).is_dir():
        cls = config_cls or AutoConfig
        kw = {} if config_cls else {"trust_remote_code": trust_remote_code}
        return cls.from_pretrained(name_or_path, **kw)
    cfg = known_config(name_or_path)
    if cfg is not None:
        return cfg
    try:
        return (config_cls or AutoConfig).from_pretrained(name_or_path)
    except Exception as e:  # offline, typo, private repo
        raise ConfigError(
            f"cannot load the config of {name_or_path!r}: not a local folder, not a known reference "
            f"model, and the hub said: {type(e).__name__}: {e}".splitlines()[0]
        ) from None
