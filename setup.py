"""Build the compiled mechanism: cython_core/mmemu/_core/<name>.pyx -> mmemu._core.<name>.

MMEMU_DEBUG=1 compiles with bounds checks, wraparound checks and C asserts on.
"""
import glob
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("MMEMU_DEBUG", "") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if DEBUG:
    macros.append(("MMEMU_DEBUG", "1"))
    extra = ["-O1", "-g", "-UNDEBUG"]
else:
    macros.append(("NDEBUG", "1"))
    extra = ["-O3"]

extensions = []
for pyx in sorted(glob.glob("cython_core/mmemu/_core/*.pyx")):
    name = "mmemu._core." + os.path.splitext(os.path.basename(pyx))[0]
    extensions.append(
        Extension(
            name,
            [pyx],
            include_dirs=[np.get_include(), "cython_core"],
            define_macros=macros,
            extra_compile_args=extra,
        )
    )

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["cython_core"],
        build_dir="build/cython",
        compiler_directives=directives,
    )
)
