"""Installs faiss_proxy, the Python drop-in for FAISS served by faissproxyd.

    pip install --no-build-isolation ./python-shim     (Debian's setuptools)

Pure Python: it needs numpy at run time and libfaissproxy (make install,
or FAISS_PROXY_LIB); no package index is used. The metadata is in
pyproject.toml; only the version is computed here, from the one place it is
written (protocol/fpx_version.h), so that it cannot differ from the C side.
"""
import os
import re

from setuptools import setup

_HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                       "protocol", "fpx_version.h")


def _version():
    #  A copy of python-shim/ alone has no header: installable all the same,
    #  under a version that says so (PEP 440 local version).
    if not os.path.exists(_HEADER):
        print("setup.py: %s not found; version 0+unknown" % _HEADER)
        return "0+unknown"
    with open(_HEADER) as header:
        match = re.search(r'^#define FPX_VERSION_STRING "([^"]+)"', header.read(), re.M)
    if not match:
        raise RuntimeError("no FPX_VERSION_STRING in %s" % _HEADER)
    return match.group(1)


setup(version=_version())
