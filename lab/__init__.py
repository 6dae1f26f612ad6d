"""Lab traffic: crafting deterministic test and demo captures with scapy.

Lateral is tested against real Suricata on real captures, and the captures are made here rather
than downloaded, so every byte of them is known and reviewable:

- `lab.traffic` builds conversations as lists of scapy packets with increasing timestamps: TCP
  sessions with a proper handshake, correct sequence numbers, optional splitting of a message
  across several segments and a FIN close; UDP request/response (DNS included); ICMP echo; and
  encapsulation helpers that wrap a list of Ethernet frames into 802.1Q, QinQ, VXLAN, GENEVE,
  GRE and ERSPAN type II / III, the ways mirrored inter-VM traffic reaches the appliance.
- `lab.scenarios` names the captures the tests and the README demo use, each with an `Expected`
  record of what stock Suricata reports on it with `rules/bundled/lateral-demo.rules`, and the
  `python -m lab.scenarios` command that writes them.
- `lab.bulk` clones scapy-built session templates into large captures at raw-bytes speed, for
  benchmarks.
- `lab.pcapfile` is the small classic-pcap writer all of them share.

Everything is deterministic: MACs, addresses, ports, sequence numbers and timestamps derive from
the scenario definition (randomness, where used, comes from a seeded generator), so writing a
scenario twice gives byte-identical files and checksums are always correct (Suricata validates
TCP checksums with the stock `stream.checksum-validation: yes`).
"""

__all__: list[str] = []
