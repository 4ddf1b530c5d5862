"""Install diskbench (``pip install .``); `make test`/`make demo` do not need this."""
import re

from setuptools import find_packages, setup

with open("diskbench/__init__.py") as f:
    VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

setup(
    name="diskbench",
    version=VERSION,
    description="A distributed storage benchmark: one server, many clients, honest MiB/s.",
    packages=find_packages(exclude=["tests", "tests.*"]),
    python_requires=">=2.7, !=3.0.*, !=3.1.*, !=3.2.*, !=3.3.*, !=3.4.*, !=3.5.*",
    extras_require={"stats": ["psutil>=5.6"]},
    entry_points={"console_scripts": [
        "diskbench-server=diskbench.server.__main__:main",
        "diskbench-client=diskbench.client.__main__:main",
        "diskbench-report=diskbench.report.__main__:main",
        "diskbench-launch=diskbench.launch:main",
    ]},
    classifiers=[
        "Programming Language :: Python :: 2.7",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Benchmark",
    ],
)
