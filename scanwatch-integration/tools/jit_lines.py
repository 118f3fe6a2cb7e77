#!/usr/bin/env python3
"""Where a loaded BPF program's time goes, by source line.

usage (root, while the program runs in a loop, e.g. the bench's
`--profile-tracked`): jit_lines.py PROG_ID [SECONDS] [TOP]

Reads the program's line info through the bpf syscall (jited_line_info,
line_info and its BTF strings: Debian's bpftool and perf have no BPF
disassembler), records `perf record -e cpu-clock -F 20000 -a` for SECONDS
(default 2), and prints the shares of the program's samples by source line,
the TOP (default 25) hottest addresses with the program's own lines before
them (a line from `core` names no caller), and the shares by source file
(a `core` line counted with the program's line before it). Only samples
inside the program's own JIT images (its main program's and each BPF
function's, from jited_ksyms and jited_func_lens) count: other programs'
images may lie between them. Addresses print as offsets from the lowest
image. A load that
misses the cache, or an atomic operation, shows as the samples of the
instruction after it. DEVELOPING.md ("Where a path's time goes").
"""
import bisect
import collections
import ctypes
import struct
import subprocess
import sys
import tempfile

SYS_BPF = 321  # x86_64
PROG_GET_FD_BY_ID, BTF_GET_FD_BY_ID, OBJ_GET_INFO_BY_FD = 13, 19, 15
OWN = ("window.rs", "main.rs", "sources.rs", "contacts.rs", "fast.rs", "parse.rs",
       "packet.rs", "evidence.rs", "clock.rs", "web.rs", "tracking.rs", "maps.rs",
       "fingerprint.rs", "classify.rs", "sketch.rs", "prefilter.rs", "trw.rs")
libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    """The bpf syscall on a copy of `attr`; its result (an fd for GET_FD_BY_ID)."""
    buf = ctypes.create_string_buffer(bytes(attr), len(attr))
    r = libc.syscall(SYS_BPF, cmd, buf, len(attr))
    if r < 0:
        raise OSError(ctypes.get_errno(), f"bpf command {cmd}")
    return r


def fd_by_id(cmd, id_):
    return bpf(cmd, struct.pack("<IIII", id_, 0, 0, 0) + b"\0" * 32)


def info(fd, buf):
    bpf(OBJ_GET_INFO_BY_FD, struct.pack("<IIQ", fd, len(buf), ctypes.addressof(buf)) + b"\0" * 16)


def line_table(prog_id):
    """[(jited address, "file:line", source text)], sorted by address, and
    the program's JIT images as [(start, end)]: its main program and each
    BPF function (a global function) has an image of its own, and other
    programs' images may lie between them."""
    pfd = fd_by_id(PROG_GET_FD_BY_ID, prog_id)
    first = ctypes.create_string_buffer(232)
    info(pfd, first)
    raw = first.raw
    nksyms, nlens = struct.unpack_from("<II", raw, 104)
    (btf_id,) = struct.unpack_from("<I", raw, 128)
    (nli,) = struct.unpack_from("<I", raw, 148)
    (njli,) = struct.unpack_from("<I", raw, 168)
    li_sz, jli_sz = struct.unpack_from("<II", raw, 172)
    li = ctypes.create_string_buffer(li_sz * nli)
    jli = ctypes.create_string_buffer(jli_sz * njli)
    ksyms = ctypes.create_string_buffer(8 * nksyms)
    lens = ctypes.create_string_buffer(4 * nlens)
    second = ctypes.create_string_buffer(232)
    struct.pack_into("<IIQQ", second, 104, nksyms, nlens, ctypes.addressof(ksyms), ctypes.addressof(lens))
    struct.pack_into("<IQQ", second, 148, nli, ctypes.addressof(li), ctypes.addressof(jli))
    struct.pack_into("<III", second, 168, njli, li_sz, jli_sz)
    info(pfd, second)
    images = []
    for i in range(min(nksyms, nlens)):
        (start,) = struct.unpack_from("<Q", ksyms.raw, 8 * i)
        (length,) = struct.unpack_from("<I", lens.raw, 4 * i)
        images.append((start, start + length))
    if not images:
        sys.exit(f"program {prog_id} has no JIT image (is the BPF JIT on?)")
    bfd = fd_by_id(BTF_GET_FD_BY_ID, btf_id)
    bi = ctypes.create_string_buffer(32)
    info(bfd, bi)
    (size,) = struct.unpack_from("<I", bi.raw, 8)
    btf = ctypes.create_string_buffer(size)
    bi = ctypes.create_string_buffer(32)
    struct.pack_into("<QI", bi, 0, ctypes.addressof(btf), size)
    info(bfd, bi)
    b = btf.raw
    (hdr_len,) = struct.unpack_from("<I", b, 4)
    str_off, str_len = struct.unpack_from("<II", b, 16)
    strs = b[hdr_len + str_off:hdr_len + str_off + str_len]

    def s(off):
        return strs[off:strs.index(b"\0", off)].decode(errors="replace")

    lines = []
    for i in range(njli):
        (addr,) = struct.unpack_from("<Q", jli.raw, i * jli_sz)
        _, file_off, line_off, line_col = struct.unpack_from("<IIII", li.raw, i * li_sz)
        lines.append((addr, f"{s(file_off).split('/')[-1]}:{line_col >> 10}", s(line_off).strip()))
    return sorted(lines), images


def main():
    prog_id = int(sys.argv[1])
    seconds = sys.argv[2] if len(sys.argv) > 2 else "2"
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    lines, images = line_table(prog_id)
    addrs = [a for a, _, _ in lines]
    base = min(start for start, _ in images)
    with tempfile.NamedTemporaryFile(suffix=".data") as data:
        subprocess.run(["perf", "record", "-e", "cpu-clock", "-F", "20000", "-a", "-o", data.name,
                        "--", "sleep", seconds], capture_output=True, check=True)
        out = subprocess.run(["perf", "script", "-i", data.name, "-F", "ip,sym"],
                             capture_output=True, text=True, check=True).stdout
    hits, total = collections.Counter(), 0
    for row in out.splitlines():
        f = row.split()
        if len(f) < 2 or "bpf_prog_" not in f[1]:
            continue
        ip = int(f[0], 16)
        # Only this program's images: another program's (the no-op or a
        # floor run in turn, a flood's generator) may lie between them.
        if not any(start <= ip < end for start, end in images):
            continue
        i = bisect.bisect_right(addrs, ip) - 1
        if i >= 0:
            hits[i] += 1
            total += 1
    print(f"samples in the program's {len(images)} JIT images: {total}")
    if total == 0:
        return
    by_line = collections.Counter()
    for i, c in hits.items():
        by_line[lines[i][1:]] += c
    print("\n-- by source line")
    for (loc, text), c in by_line.most_common(40):
        print(f"{100 * c / total:5.1f}% {loc:<24} {text[:90]}")
    print("\n-- hottest addresses, with the program's own lines before them")
    for i, c in hits.most_common(top):
        before, j = [], i
        while j > 0 and len(before) < 3:
            j -= 1
            if lines[j][1].split(":")[0] in OWN:
                before.append(f"{lines[j][1]} {lines[j][2][:50]}")
        print(f"{100 * c / total:5.1f}% +{lines[i][0] - base:04x} {lines[i][1]:<22} {lines[i][2][:60]}")
        print(f"        after: {' | '.join(before)}")
    by_file = collections.Counter()
    for i, c in hits.items():
        j = i
        while j > 0 and lines[j][1].split(":")[0] not in OWN:
            j -= 1
        by_file[lines[j][1].split(":")[0]] += c
    print("\n-- by source file")
    for f, c in by_file.most_common():
        print(f"{100 * c / total:5.1f}% {f}")


if __name__ == "__main__":
    main()
