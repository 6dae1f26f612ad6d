"""EVE records/s through reader → enrich → EVE writer, on one core, against a baseline.

Both runs are single-threaded (one core each); they are not pinned to a CPU, because on a small
shared machine a pinned core may be the busy one.

Generates a large EVE stream of mixed record types (alert, flow, dns, http, tls, fileinfo,
anomaly, dhcp, ssh, stats), then times, in the same invocation and on the same core:

- baseline: a plain loop of ``json.loads`` + ``json.dumps`` per line, written to a file;
- lateral:  EveReader → Pipeline (parse, VM identity from a 256-VM inventory, stable ids)
            → EveFileSink.

Usage: python bench/pipeline.py [--records 1000000] [--rounds 2] [--dir /tmp] [--keep]
       [--mirror-health]  (also: the pipeline feeding mirror health's flow tap)
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from pathlib import Path

from appliance.config import MirrorHealthSettings, VmIdentity
from appliance.enrich import Inventory
from appliance.eve.reader import EveReader
from appliance.outputs import EveFileSink
from appliance.pipeline import FlowTap, Pipeline
from capture.mirror_watch import MirrorWatch
from capture.ovsdb import OvsdbClient

TEMPLATES = {
    "flow": (
        '{{"timestamp":"2026-11-26T10:{m:02d}:{s:02d}.{us:06d}+0000","flow_id":{fid},'
        '"in_iface":"ens4","event_type":"flow","src_ip":"{src}","src_port":{sp},'
        '"dest_ip":"{dst}","dest_port":{dp},"proto":"TCP","app_proto":"http",'
        '"ether":{{"src_macs":["{smac}"],"dest_macs":["{dmac}"]}},'
        '"community_id":"1:Xb2mB1ZgdLmn3L1rRsoF0ZcZMH8=","flow":{{"pkts_toserver":{p1},'
        '"pkts_toclient":{p2},"bytes_toserver":{b1},"bytes_toclient":{b2},'
        '"start":"2026-11-26T10:{m:02d}:{s:02d}.000000+0000",'
        '"end":"2026-11-26T10:{m:02d}:{s:02d}.{us:06d}+0000","age":0,"state":"closed",'
        '"reason":"timeout","alerted":false}},"tcp":{{"tcp_flags":"1b","tcp_flags_ts":"1b",'
        '"tcp_flags_tc":"1b","syn":true,"fin":true,"psh":true,"ack":true,"state":"closed"}}}}'
    ),
    "alert": (
        '{{"timestamp":"2026-11-26T10:{m:02d}:{s:02d}.{us:06d}+0000","flow_id":{fid},'
        '"in_iface":"ens4","event_type":"alert","src_ip":"{src}","src_port":{sp},'
        '"dest_ip":"{dst}","dest_port":{dp},"proto":"TCP","pkt_src":"wire/pcap",'
        '"ether":{{"src_mac":"{smac}","dest_mac":"{dmac}"}},'
        '"community_id":"1:Xb2mB1ZgdLmn3L1rRsoF0ZcZMH8=","tx_id":0,"alert":{{"action":"allowed",'
        '"gid":1,"signature_id":{sid},"rev":3,"signature":"ET WEB_SERVER /etc/passwd '
        'Detected in URI","category":"Attempted Information Leak","severity":2,'
        '"metadata":{{"created_at":["2010_09_23"],"updated_at":["2019_07_26"]}}}},'
        '"http":{{"hostname":"web01","url":"/cgi-bin/../../etc/passwd","http_user_agent":'
        '"curl/8.5.0","http_method":"GET","protocol":"HTTP/1.1","length":0}},'
        '"app_proto":"http","direction":"to_server","flow":{{"pkts_toserver":3,'
        '"pkts_toclient":1,"bytes_toserver":300,"bytes_toclient":74,'
        '"start":"2026-11-26T10:{m:02d}:{s:02d}.000000+0000","src_ip":"{src}",'
        '"dest_ip":"{dst}","src_port":{sp},"dest_port":{dp}}}}}'
    ),
    "dns": (
        '{{"timestamp":"2026-11-26T10:{m:02d}:{s:02d}.{us:06d}+0000","flow_id":{fid},'
        '"event_type":"dns","src_ip":"{src}","src_port":{sp},"dest_ip":"{dst}","dest_port":53,'
        '"proto":"UDP","pkt_src":"wire/pcap","community_id":"1:3dOlp8ntUVx1pST5gnmqaqHNfUY=",'
        '"dns":{{"version":2,"type":"query","id":{sp},"rrname":"host{sp}.corp.internal",'
        '"rrtype":"A","tx_id":0,"opcode":0}}}}'
    ),
    "http": (
        '{{"timestamp":"2026-11-26T10:{m:02d}:{s:02d}.{us:06d}+0000","flow_id":{fid},'
        '"event_type":"http","src_ip":"{src}","src_port":{sp},"dest_ip":"{dst}",'
        '"dest_port":80,"proto":"TCP","tx_id":0,"http":{{"hostname":"app{dp}.corp.internal",'
        '"url":"/api/v1/items/{sp}?q=lateral","http_user_agent":"python-requests/2.31",'
        '"http_content_type":"application/json","http_method":"GET","protocol":"HTTP/1.1",'
        '"status":200,"length":{b1}}}}}'
    ),
    "tls": (
        '{{"timestamp":"2026-11-26T10:{m:02d}:{s:02d}.{us:06d}+0000","flow_id":{fid},'
        '"event_type":"tls","src_ip":"{src}","src_port":{sp},"dest_ip":"{dst}",'
        '"dest_port":443,"proto":"TCP","tls":{{"subject":"CN=db{dp}.corp.internal",'
        '"issuerdn":"CN=Corp Internal CA","serial":"00:A1:{dp}","fingerprint":'
        '"3a:1f:0c:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa","sni":"db.corp.internal",'
        '"version":"TLS 1.3","notbefore":"2026-01-01T00:00:00","notafter":"2027-01-01T00:00:00",'
        '"ja3":{{"hash":"e7d705a3286e19ea42f587b344ee6865"}}}}}}'
    ),
    "fileinfo": (
        '{{"timestamp":"2026-11-26T10:{m:02d}:{s:02d}.{us:06d}+0000","flow_id":{fid},'
        '"event_type":"fileinfo","src_ip":"{dst}","src_port":80,"dest_ip":"{src}",'
        '"dest_port":{sp},"proto":"TCP","http":{{"hostname":"repo","url":"/pkg/{sp}.deb",'
        '"http_method":"GET","status":200}},"app_proto":"http","fileinfo":{{"filename":'
        '"/pkg/{sp}.deb","gaps":false,"state":"CLOSED","stored":false,"size":{b2},"tx_id":0}}}}'
    ),
    "anomaly": (
        '{{"timestamp":"2026-11-26T10:{m:02d}:{s:02d}.{us:06d}+0000","event_type":"anomaly",'
        '"src_ip":"{src}","src_port":{sp},"dest_ip":"{dst}","dest_port":{dp},"proto":"UDP",'
        '"anomaly":{{"type":"decode","event":"decoder.udp.pkt_too_small"}}}}'
    ),
    "dhcp": (
        '{{"timestamp":"2026-11-26T10:{m:02d}:{s:02d}.{us:06d}+0000","flow_id":{fid},'
        '"event_type":"dhcp","src_ip":"0.0.0.0","src_port":68,"dest_ip":"255.255.255.255",'
        '"dest_port":67,"proto":"UDP","dhcp":{{"type":"request","id":{sp},'
        '"client_mac":"{smac}","assigned_ip":"0.0.0.0","dhcp_type":"discover"}}}}'
    ),
    "ssh": (
        '{{"timestamp":"2026-11-26T10:{m:02d}:{s:02d}.{us:06d}+0000","flow_id":{fid},'
        '"event_type":"ssh","src_ip":"{src}","src_port":{sp},"dest_ip":"{dst}","dest_port":22,'
        '"proto":"TCP","ssh":{{"client":{{"proto_version":"2.0","software_version":'
        '"OpenSSH_9.2"}},"server":{{"proto_version":"2.0","software_version":"OpenSSH_9.6"}}}}}}'
    ),
}
WEIGHTS = {"flow": 30, "dns": 20, "http": 15, "tls": 10, "alert": 10, "fileinfo": 5,
           "anomaly": 4, "dhcp": 2, "ssh": 4}


def generate(path: Path, n: int, seed: int = 7) -> int:
    rnd = random.Random(seed)
    kinds = rnd.choices(list(WEIGHTS), weights=list(WEIGHTS.values()), k=n)
    written = 0
    with path.open("w", encoding="ascii") as fh:
        buf = []
        for i, kind in enumerate(kinds):
            a, b = rnd.randrange(1, 255), rnd.randrange(1, 255)
            buf.append(TEMPLATES[kind].format(
                m=(i // 60000) % 60, s=(i // 1000) % 60, us=i % 1000000, fid=rnd.getrandbits(50),
                src=f"10.0.{a % 4}.{a}", dst=f"10.0.{b % 4}.{b}", sp=rnd.randrange(1024, 65535),
                dp=rnd.choice((80, 443, 445, 3306, 5432)), smac=f"52:54:00:00:{a % 4:02x}:{a:02x}",
                dmac=f"52:54:00:00:{b % 4:02x}:{b:02x}", p1=rnd.randrange(1, 90),
                p2=rnd.randrange(1, 90), b1=rnd.randrange(60, 90000), b2=rnd.randrange(60, 900000),
                sid=rnd.choice((2012345, 2019401, 2100498, 1000001))))
            if i % 50000 == 49999:
                buf.append('{"timestamp":"2026-11-26T10:00:00.000000+0000","event_type":"stats",'
                           '"stats":{"uptime":8,"capture":{"kernel_packets":1000,'
                           '"kernel_drops":0},"decoder":{"pkts":1000,"bytes":640000}}}')
            if len(buf) >= 10000:
                written += len(buf)
                fh.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            written += len(buf)
            fh.write("\n".join(buf) + "\n")
    return written


def inventory() -> Inventory:
    vms = []
    for a in range(1, 255):
        vms.append(VmIdentity(name=f"vm-{a:03d}", uuid=f"00000000-0000-4000-8000-{a:012x}",
                              iface_id=f"port-{a}", host="hv01",
                              macs=(f"52:54:00:00:{a % 4:02x}:{a:02x}",),
                              ips=(f"10.0.{a % 4}.{a}",)))
    return Inventory(vms)


def run_baseline(src: Path, dst: Path) -> int:
    n = 0
    with src.open("rb") as fin, dst.open("w", encoding="utf-8") as fout:
        for line in fin:
            rec = json.loads(line)
            fout.write(json.dumps(rec) + "\n")
            n += 1
    return n


def run_lateral(src: Path, dst: Path, flow_tap: FlowTap | None = None) -> int:
    pipeline = Pipeline(sensor="bench-sensor", inventory=inventory(), flow_tap=flow_tap)
    n = 0
    with EveReader(src) as reader, EveFileSink(dst) as sink:
        while lines := reader.read_lines():
            out = pipeline.process(lines)
            sink.write(out)
            n += len(out)
    return n


def run_lateral_health(src: Path, dst: Path) -> int:
    """The pipeline feeding mirror health's flow tap (as ``lateral run`` with OVSDB does); the
    watch's thread is not started: the tap's queue only fills (the judge's work is off the
    pipeline's thread)."""
    watch = MirrorWatch(MirrorHealthSettings(), inventory().vms, _no_switch)
    return run_lateral(src, dst, flow_tap=watch.flow)


def _no_switch() -> OvsdbClient:
    raise AssertionError("the bench does not poll a switch")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--mirror-health", action="store_true",
                    help="also time the pipeline feeding mirror health's flow tap")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lateral-bench-", dir=args.dir))
    src = work / "eve.json"
    t0 = time.perf_counter()
    total = generate(src, args.records)
    size_mb = src.stat().st_size / 1e6
    print(f"generated {total:,} records ({size_mb:.0f} MB) in {time.perf_counter() - t0:.1f} s")

    # Alternate the two, best of --rounds each: the machine is shared and noisy.
    results: dict[str, float] = {}
    for round_no in range(args.rounds):
        runners = [("baseline json", run_baseline), ("lateral", run_lateral)]
        if args.mirror_health:
            runners.append(("lateral+health", run_lateral_health))
        for name, fn in runners:
            out = work / f"out-{name.split()[0]}.json"
            out.unlink(missing_ok=True)
            t0 = time.perf_counter()
            n = fn(src, out)
            dt = time.perf_counter() - t0
            results[name] = max(results.get(name, 0.0), n / dt)
            print(f"  round {round_no + 1}: {name:>14}: {n:,} records in {dt:.2f} s "
                  f"= {n / dt:,.0f} records/s")
    for name, rate in results.items():
        print(f"best {name:>14}: {rate:,.0f} records/s")
    ratio = results["lateral"] / results["baseline json"]
    if "lateral+health" in results:
        print(f"ratio lateral+health/baseline: "
              f"{results['lateral+health'] / results['baseline json']:.2f}x; "
              f"lateral+health/lateral: {results['lateral+health'] / results['lateral']:.3f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"ratio lateral/baseline: {ratio:.2f}x   (targets: >= 2x and >= 100,000 records/s; "
          f"peak RSS {rss:.0f} MB)")
    if not args.keep:
        for p in work.iterdir():
            p.unlink()
        work.rmdir()


if __name__ == "__main__":
    main()
