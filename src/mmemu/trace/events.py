"""What a trace holds: the event, checkpoint and mapping records (numpy structured dtypes),
the event kinds and the x86-64 numbers of the memory system calls."""
from __future__ import annotations

import numpy as np

# kinds of event
FAULT = 1       # exceptions:page_fault_user: a0 address, a1 error code, a2 ip
KFAULT = 2      # exceptions:page_fault_kernel at a user address (copy_to/from_user)
SYSCALL = 3     # sys_enter_* + sys_exit_* of one task: nr, a0..a5, ret
FORK = 4        # task:task_newtask (+ sched_process_fork): a0 child pid, a1 clone flags
EXEC = 5        # sched:sched_process_exec: a0 old pid
EXIT = 6        # sched:sched_process_exit: a0 group_dead
KIND_NAMES = {FAULT: "fault", KFAULT: "kernel-fault", SYSCALL: "syscall", FORK: "fork",
              EXEC: "exec", EXIT: "exit"}

# x86-64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl)
SYSCALLS = {
    3: "close", 9: "mmap", 10: "mprotect", 11: "munmap", 12: "brk", 25: "mremap",
    28: "madvise", 29: "shmget", 30: "shmat", 56: "clone", 57: "fork", 58: "vfork",
    59: "execve", 60: "exit", 67: "shmdt", 149: "mlock", 150: "munlock", 151: "mlockall",
    152: "munlockall", 231: "exit_group", 257: "openat", 319: "memfd_create",
    325: "mlock2", 329: "pkey_mprotect", 435: "clone3",
}
SYSCALL_NR = {v: k for k, v in SYSCALLS.items()}

# page fault error code bits (arch/x86/include/asm/trap_pf.h)
PF_PROT, PF_WRITE, PF_USER, PF_INSTR = 1 << 0, 1 << 1, 1 << 2, 1 << 4

EVENT_DTYPE = np.dtype([("ts", "<u8"), ("pid", "<i4"), ("kind", "<u2"), ("nr", "<i2"),
                        ("a0", "<u8"), ("a1", "<u8"), ("a2", "<u8"), ("a3", "<u8"),
                        ("a4", "<u8"), ("a5", "<u8"), ("ret", "<i8")])

# /proc/PID/status (kB) and smaps_rollup (kB) fields a checkpoint holds; -1: not read
STATUS_FIELDS = ("VmPTE", "VmRSS", "RssAnon", "RssFile", "RssShmem", "VmSwap")
ROLLUP_FIELDS = ("Rss", "Pss", "Anonymous", "AnonHugePages", "Swap")
CHECKPOINT_DTYPE = np.dtype([("ts", "<u8"), ("pid", "<i4"), ("event", "<i8"), ("minflt", "<i8")]
                            + [(f, "<i8") for f in STATUS_FIELDS]
                            + [("rollup_" + f, "<i8") for f in ROLLUP_FIELDS])

# the file mappings /proc/PID/maps showed at a checkpoint: which file an mmap's fd was
MAP_DTYPE = np.dtype([("checkpoint", "<i8"), ("pid", "<i4"), ("start", "<u8"), ("end", "<u8"),
                      ("pgoff", "<u8"), ("file", "<i4")])
