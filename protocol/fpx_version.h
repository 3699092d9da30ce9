/*  fpx_version.h — faissproxy's version: the one place it is written.

    The daemon, libfaissproxy (faissproxy.h includes this file), the CLI,
    fpx-loadtest, the Makefile (soname version, faissproxy.pc) and the
    Python package (python-shim/setup.py) all read it from here, so they
    cannot disagree. Installed next to faissproxy.h.
*/
#ifndef FPX_VERSION_H_INCLUDED
#define FPX_VERSION_H_INCLUDED

#define FPX_VERSION_MAJOR 0
#define FPX_VERSION_MINOR 1
#define FPX_VERSION_PATCH 0
#define FPX_VERSION_STRING "0.1.0"

#endif
