"""Only what pyproject.toml cannot say: `conf/` stays at the top of the repo (where Hydra users look for it)
and ships inside the package as `ldae/conf`, so an installed wheel, an install from git and an editable
install all find the same config tree (ldae/cli.py CONF_DIR)."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["ldae", "ldae.*"]) + ["ldae.conf"],
    package_dir={"ldae.conf": "conf"},
    package_data={"ldae.conf": ["**/*.yaml"]},
)
