"""Build hook for the optional native extension ``observatory.schemas._native``.

Everything else about the package is declared in pyproject.toml. The Rust
crate is in schemas/native/; setuptools-rust builds it with cargo during
``pip install`` (also ``pip install -e .``). Without a Rust toolchain the
install still succeeds and ``observatory.schemas.fastpath.available()`` is
False: the extension is optional.
"""

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools_rust import Binding, RustExtension


def _find_cargo() -> None:
    """rustup installs cargo in ~/.cargo/bin (or $CARGO_HOME/bin), which is on
    the PATH of login shells only: make it visible to the cargo that
    setuptools-rust starts, wherever pip was started from."""
    if os.environ.get("CARGO") or shutil.which("cargo"):
        return
    homes = [os.environ.get("CARGO_HOME"), str(Path.home() / ".cargo")]
    for home in filter(None, homes):
        bin_dir = Path(home) / "bin"
        if (bin_dir / "cargo").is_file():
            os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
            return


_find_cargo()

setup(
    rust_extensions=[
        RustExtension(
            "observatory.schemas._native",
            path="schemas/native/Cargo.toml",
            binding=Binding.PyO3,
            # Release profile (opt-level 3, thin LTO) even for editable installs,
            # which setuptools-rust would otherwise build in debug mode.
            debug=False,
            optional=True,
            py_limited_api=False,
        )
    ],
)
