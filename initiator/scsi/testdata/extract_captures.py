#!/usr/bin/env python3
"""Regenerates captures_test.go from the reference pcaps.

    cd initiator/scsi && python3 testdata/extract_captures.py > captures_test.go && gofmt -l .

Reassembles each TCP stream of a capture with tshark, splits it into iSCSI
PDUs (48-byte BHS + AHS + padded data segment; the files used here carry no
digests), matches every Data-In to its SCSI Command by Initiator Task Tag and
emits the payloads the tests use as Go hex literals.
"""
import collections, re, subprocess, sys

CAPTURES = "/work/shared/ref/captures"
PORTS = {"tgtd": 3260, "istgt": 3263, "lio": 13260}


def pdus(b):
    i = 0
    while i + 48 <= len(b):
        h = b[i:i + 48]
        ahs = h[4] * 4
        dsl = int.from_bytes(h[5:8], "big")
        yield h, b[i + 48 + ahs:i + 48 + ahs + dsl]
        i += 48 + ahs + ((dsl + 3) // 4) * 4


def datain(name):
    """Returns [(stream, cdb_hex, lun_hex, data_hex)] for every Data-In."""
    port = PORTS[name.split("-")[0]]
    out = subprocess.run(["tshark", "-r", f"{CAPTURES}/{name}.pcap", "-T", "fields",
                          "-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.payload"],
                         capture_output=True, text=True, check=True).stdout
    streams = collections.OrderedDict()
    for line in out.splitlines():
        p = line.split("\t")
        if len(p) < 3 or not p[2]:
            continue
        k = (int(p[0]), int(p[1]) == port)
        streams.setdefault(k, bytearray()).extend(bytes.fromhex(p[2].replace(":", "")))
    res = []
    for s in sorted(set(k[0] for k in streams)):
        cmds = {}
        for h, d in pdus(streams.get((s, False), b"")):
            if h[0] & 0x3f == 0x01:
                cmds[bytes(h[16:20])] = (h[32:48].hex(), h[8:16].hex())
        for h, d in pdus(streams.get((s, True), b"")):
            if h[0] & 0x3f == 0x25 and bytes(h[16:20]) in cmds:
                cdb, lun = cmds[bytes(h[16:20])]
                res.append((s, cdb, lun, d.hex()))
    return res


_cache = {}


def get(f, stream, cdb, lun=None):
    if f not in _cache:
        _cache[f] = datain(f)
    for s, c, l, d in _cache[f]:
        if s == stream and c == cdb and (lun is None or l == lun):
            return d
    sys.exit(f"{f}: no Data-In for stream {stream} cdb {cdb}")

specs = [
 ("capTgtdInquiryLUN0","tgtd-none",1,"12000000400000000000000000000000","0000000000000000"),
 ("capTgtdInquiryLUN1","tgtd-none",4,"12000000420000000000000000000000",None),
 ("capIstgtInquiry","istgt-none",0,"12000000600000000000000000000000",None),
 ("capLioInquiry","lio-none",1,"12000000600000000000000000000000",None),
 ("capTgtdVPD00","tgtd-none",4,"12010000400000000000000000000000",None),
 ("capIstgtVPD00","istgt-none",3,"12010000400000000000000000000000",None),
 ("capLioVPD00","lio-none",4,"12010000400000000000000000000000",None),
 ("capTgtdVPD83Short","tgtd-none",2,"12018300400000000000000000000000",None),
 ("capTgtdVPD83","tgtd-none",2,"120183004c0000000000000000000000",None),
 ("capIstgtVPD83","istgt-none",1,"12018300ad0000000000000000000000",None),
 ("capLioVPD83Short","lio-none",2,"12018300400000000000000000000000",None),
 ("capLioVPD83","lio-none",2,"12018300ad0000000000000000000000",None),
 ("capTgtdVPDB0","tgtd-none",4,"1201b000400000000000000000000000",None),
 ("capIstgtVPDB0","istgt-none",3,"1201b000400000000000000000000000",None),
 ("capLioVPDB0","lio-none",4,"1201b000400000000000000000000000",None),
 ("capTgtdVPDB1","tgtd-residuals",0,"1201b100ff0000000000000000000000",None),
 ("capTgtdVPDB2","tgtd-none",4,"1201b200400000000000000000000000",None),
 ("capLioVPDB2","lio-none",4,"1201b200400000000000000000000000",None),
 ("capTgtdRC10","tgtd-none",1,"25000000000000000000000000000000",None),
 ("capTgtdRC16","tgtd-none",3,"9e100000000000000000000000200000",None),
 ("capIstgtRC16","istgt-none",2,"9e100000000000000000000000200000",None),
 ("capLioRC16","lio-none",3,"9e100000000000000000000000200000",None),
 ("capTgtdReportLUNs16","tgtd-none",1,"a0000000000000000010000000000000",None),
 ("capTgtdReportLUNs24","tgtd-none",1,"a0000000000000000018000000000000",None),
 ("capTgtdModeSense6","tgtd-none",4,"1a083f00ff0000000000000000000000",None),
 ("capIstgtModeSense6","istgt-none",3,"1a083f00ff0000000000000000000000",None),
 ("capLioModeSense6","lio-none",4,"1a083f00ff0000000000000000000000",None),
 ("capTgtdModeSense6BD","tgtd-residuals",0,"1a003f00ff0000000000000000000000",None),
]
desc = {
 "capTgtdInquiryLUN0":"tgtd-none.pcap stream 1, LUN 0 (tgtd's controller LUN), INQUIRY alloc 64",
 "capTgtdInquiryLUN1":"tgtd-none.pcap stream 4, LUN 1, INQUIRY alloc 66",
 "capIstgtInquiry":"istgt-none.pcap stream 0, LUN 0, INQUIRY alloc 96",
 "capLioInquiry":"lio-none.pcap stream 1, LUN 1, INQUIRY alloc 96",
 "capTgtdVPD00":"tgtd-none.pcap stream 4, VPD 0x00 alloc 64",
 "capIstgtVPD00":"istgt-none.pcap stream 3, VPD 0x00 alloc 64",
 "capLioVPD00":"lio-none.pcap stream 4, VPD 0x00 alloc 64",
 "capTgtdVPD83Short":"tgtd-none.pcap stream 2, VPD 0x83 alloc 64: cut inside the third designator",
 "capTgtdVPD83":"tgtd-none.pcap stream 2, VPD 0x83 alloc 76 (complete)",
 "capIstgtVPD83":"istgt-none.pcap stream 1, VPD 0x83 alloc 173",
 "capLioVPD83Short":"lio-none.pcap stream 2, VPD 0x83 alloc 64: cut inside the target port group designator",
 "capLioVPD83":"lio-none.pcap stream 2, VPD 0x83 alloc 173",
 "capTgtdVPDB0":"tgtd-none.pcap stream 4, VPD 0xB0 alloc 64",
 "capIstgtVPDB0":"istgt-none.pcap stream 3, VPD 0xB0 alloc 64",
 "capLioVPDB0":"lio-none.pcap stream 4, VPD 0xB0 alloc 64: LIO's short page (length 0x10)",
 "capTgtdVPDB1":"tgtd-residuals.pcap stream 0, VPD 0xB1 alloc 255",
 "capTgtdVPDB2":"tgtd-none.pcap stream 4, VPD 0xB2 alloc 64",
 "capLioVPDB2":"lio-none.pcap stream 4, VPD 0xB2 alloc 64",
 "capTgtdRC10":"tgtd-none.pcap stream 1, LUN 1, READ CAPACITY(10)",
 "capTgtdRC16":"tgtd-none.pcap stream 3, READ CAPACITY(16) alloc 32",
 "capIstgtRC16":"istgt-none.pcap stream 2, READ CAPACITY(16) alloc 32",
 "capLioRC16":"lio-none.pcap stream 3, READ CAPACITY(16) alloc 32",
 "capTgtdReportLUNs16":"tgtd-none.pcap stream 1, REPORT LUNS alloc 16 (cut: one of two LUNs)",
 "capTgtdReportLUNs24":"tgtd-none.pcap stream 1, REPORT LUNS alloc 24",
 "capTgtdModeSense6":"tgtd-none.pcap stream 4, MODE SENSE(6) all pages, DBD, alloc 255",
 "capIstgtModeSense6":"istgt-none.pcap stream 3, MODE SENSE(6) all pages, DBD, alloc 255",
 "capLioModeSense6":"lio-none.pcap stream 4, MODE SENSE(6) all pages, DBD, alloc 255",
 "capTgtdModeSense6BD":"tgtd-residuals.pcap stream 0, MODE SENSE(6) all pages with block descriptor, alloc 255",
}
out = ["// Code generated by testdata/extract_captures.py; DO NOT EDIT.", "",
       "package scsi", "",
       "// Data-In payloads extracted from the reference captures in",
       "// /work/shared/ref/captures (see its README.md): each TCP stream was",
       "// reassembled, split into PDUs, and every Data-In matched to its SCSI",
       "// Command by Initiator Task Tag. Each comment names capture, stream and CDB.",
       "var ("]
for name, f, s, cdb, lun in specs:
    h = get(f, s, cdb, lun)
    out.append(f"\t// {desc[name]}.")
    chunks = [h[i:i + 72] for i in range(0, len(h), 72)]
    if len(chunks) == 1:
        out.append(f'\t{name} = mustHex("{h}")')
    else:
        out.append(f"\t{name} = mustHex(`")
        out.extend("\t\t" + c for c in chunks)
        out[-1] += "`)"
out.append(")")
print("\n".join(out))
