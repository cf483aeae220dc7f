"""Build steps setuptools cannot express declaratively.

``build_ext`` first builds the freestanding stub (``aioumm/stub_src``, with
the system gcc through its Makefile) into ``aioumm/_bin``, then the cffi
module.  Editable installs run the same step in place.
"""

import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


class BuildWithStub(build_ext):
    def run(self) -> None:
        # build_lib is relative to the project, and make runs in stub_src: resolve it here.
        dest = HERE / "aioumm" / "_bin" if self.inplace else Path(self.build_lib).resolve() / "aioumm" / "_bin"
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(["make", "-s", "-C", str(HERE / "aioumm" / "stub_src"), f"OUT={dest}"], check=True)
        super().run()


setup(cffi_modules=["aioumm/_native_build.py:ffibuilder"], cmdclass={"build_ext": BuildWithStub})
