"""Build hook for the one optional compiled part: ``lifescope.probes._sampler`` (see its .c file).

Everything else is configured in pyproject.toml. The extension is ``optional``: where no C
compiler or no Python headers exist, ``pip install .`` still succeeds and the GIL probe uses
its pure-Python loop (``probes/gil_batch.py``), which works the same and says it costs more.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "lifescope.probes._sampler",
            sources=["src/lifescope/probes/_sampler.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
