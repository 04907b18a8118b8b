"""Build hook: compile protos/ into router/_gen before packaging (see router/protos_build.py)."""

import runpy

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithProtos(build_py):
    """build_py that first generates the gRPC code from protos/."""

    def run(self) -> None:
        runpy.run_path("router/protos_build.py", run_name="router.protos_build")["build"]()
        super().run()


setup(cmdclass={"build_py": BuildWithProtos})
