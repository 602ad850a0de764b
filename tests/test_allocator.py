"""The glibc thresholds that `nodescope run` and Dask tasks set."""

import platform

import pytest

from nodescope.runner import allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="needs glibc")
def test_glibc_accepts_both_thresholds():
    assert allocator.keep_freed_memory() is True


def test_without_mallopt_it_reports_false(monkeypatch):
    def no_library(*args, **kwargs):
        raise OSError("no libc")

    monkeypatch.setattr(allocator.ctypes, "CDLL", no_library)
    assert allocator.keep_freed_memory() is False
