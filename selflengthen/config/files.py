"""Where the shipped config files are, and composing them without a Hydra job.

The YAML lives in the repository's top-level `conf/`; the wheel carries it inside the
installed package as `selflengthen.conf` (pyproject.toml maps the folder, for an editable
install too), so an installed `selflengthen` finds its configs through importlib.resources
from any working folder. A package imported from a source tree (a checkout on PYTHONPATH,
or an editable install of it) reads that tree's own `conf/`: the same folder an editable
install maps, and never another checkout's when several share one virtual environment.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from selflengthen.core.errors import UserError

CONF_PACKAGE = "selflengthen.conf"
_TREE = Path(__file__).resolve().parents[2]  # the source tree's root, or site-packages when installed


def conf_dir() -> Path:
    """The folder holding config.yaml and the config groups."""
    if (_TREE / "pyproject.toml").is_file() and (_TREE / "conf" / "config.yaml").is_file():
        return _TREE / "conf"  # imported from a source tree
    try:
        root = resources.files(CONF_PACKAGE)
    except ModuleNotFoundError:
        root = None
    if root is not None and root.joinpath("config.yaml").is_file():
        return Path(str(root))
    raise UserError(f"the config files are missing: the package {CONF_PACKAGE} holds no config.yaml; reinstall "
                    "selflengthen (pip install selflengthen, or pip install -e . in a checkout)")


def compose(config_name: str, overrides: list[str], return_hydra_config: bool = False):
    """conf/<config_name>.yaml with the overrides, as a Hydra job would see it, without
    running one (nothing is written); Hydra's global state is cleared before and after."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=overrides,
                                 return_hydra_config=return_hydra_config)
    finally:
        GlobalHydra.instance().clear()


def missing_values(cfg, prefix: str = "") -> list[str]:
    """The keys whose value is still Hydra's `???` (a preset's "you must set this"), without
    resolving interpolations; the hydra node is left out."""
    out = []
    keys = list(cfg.keys()) if isinstance(cfg, DictConfig) else range(len(cfg))
    for key in keys:
        path = f"{prefix}{key}" if isinstance(cfg, DictConfig) else f"{prefix.rstrip('.')}[{key}]"
        if path == "hydra":
            continue
        if OmegaConf.is_missing(cfg, key):
            out.append(path)
            continue
        node = cfg._get_node(key)
        if isinstance(node, (DictConfig, ListConfig)) and not node._is_interpolation() and not node._is_none():
            out += missing_values(node, path + ".")
    return out
