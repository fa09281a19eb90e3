"""Where the shipped config files are, and composing them without a Hydra job.

The YAML lives in the repository's top-level `conf/`; the wheel carries it inside the
installed package as `selflengthen.conf` (pyproject.toml maps the folder), so an installed
`selflengthen` finds its configs through importlib.resources from any working folder, and
an editable install finds the checkout's. A source checkout used without installing (on
PYTHONPATH) reads the `conf/` beside the package.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from selflengthen.core.errors import UserError

CONF_PACKAGE = "selflengthen.conf"
_CHECKOUT_CONF = Path(__file__).resolve().parents[2] / "conf"


def conf_dir() -> Path:
    """The folder holding config.yaml and the config groups."""
    try:
        root = resources.files(CONF_PACKAGE)
    except ModuleNotFoundError:  # a checkout on PYTHONPATH: the package is not installed
        root = None
    if root is not None and root.joinpath("config.yaml").is_file():
        return Path(str(root))
    if (_CHECKOUT_CONF / "config.yaml").is_file():
        return _CHECKOUT_CONF
    raise UserError(f"the config files are missing: neither the package {CONF_PACKAGE} nor {_CHECKOUT_CONF} "
                    "holds config.yaml; reinstall selflengthen (pip install selflengthen, or pip install -e . "
                    "in a checkout)")


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
