"""Installs faiss_proxy, the Python drop-in for FAISS served by faissproxyd.

    pip install --no-build-isolation ./python-shim     (Debian's setuptools)

Pure Python: it needs numpy at run time and libfaissproxy (make install,
or FAISS_PROXY_LIB); no package index is used.
"""
from setuptools import setup

setup(
    name="faiss_proxy",
    version="0.1.0",
    description="import faiss_proxy as faiss: FAISS's Python API served by faissproxyd",
    packages=["faiss_proxy"],
    python_requires=">=3.8",
)
