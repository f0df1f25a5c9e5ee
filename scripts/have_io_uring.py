#!/usr/bin/python3
"""Exit 0 when this kernel lets us create the io_uring portico's io_uring
backend needs (single issuer, deferred task work: Linux >= 6.1, not blocked
by kernel.io_uring_disabled or a seccomp profile); else print why, exit 1.
`make test` uses it to decide whether the io_uring pass can run here."""
import ctypes
import errno
import os
import sys

SYS_io_uring_setup = 425  # same number on x86_64 and aarch64
IORING_SETUP_SUBMIT_ALL = 1 << 7
IORING_SETUP_CQSIZE = 1 << 3
IORING_SETUP_R_DISABLED = 1 << 6
IORING_SETUP_SINGLE_ISSUER = 1 << 12
IORING_SETUP_DEFER_TASKRUN = 1 << 13


class Params(ctypes.Structure):
    _fields_ = [("sq_entries", ctypes.c_uint32), ("cq_entries", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("sq_thread_cpu", ctypes.c_uint32),
                ("sq_thread_idle", ctypes.c_uint32), ("features", ctypes.c_uint32),
                ("wq_fd", ctypes.c_uint32), ("resv", ctypes.c_uint32 * 3),
                ("sq_off", ctypes.c_uint8 * 40), ("cq_off", ctypes.c_uint8 * 40)]


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    p = Params()
    p.flags = (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED
               | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE)
    p.cq_entries = 64
    fd = libc.syscall(SYS_io_uring_setup, 8, ctypes.byref(p))
    if fd < 0:
        e = ctypes.get_errno()
        print("io_uring unavailable here: io_uring_setup: %s" % os.strerror(e) +
              (" (kernel older than 6.1?)" if e == errno.EINVAL else ""))
        return 1
    os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
