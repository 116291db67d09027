"""The compiled part of the package: the screening lexer's scanner (`screening/scanner.pyx`), a
value's feature contribution (`screening/contribution.pyx`), the path of a request's values to their
contributions (`screening/field_path.pyx`) and the ranking of a row's top contributions
(`screening/ranker.pyx`), accelerators of their Python definitions.

Everything else about the package is declared in pyproject.toml; setuptools reads both. An editable
install (`make setup`) builds the extension into the source tree, next to the `.pyx`, where
`import screening.scanner` finds them.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [
            Extension("screening.scanner", ["screening/scanner.pyx"]),
            Extension("screening.contribution", ["screening/contribution.pyx"]),
            Extension("screening.field_path", ["screening/field_path.pyx"]),
            Extension("screening.ranker", ["screening/ranker.pyx"]),
        ],
        compiler_directives={"language_level": "3"},
    ),
)
