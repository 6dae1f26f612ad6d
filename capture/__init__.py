"""Getting traffic to the engine: attaching to virtual switches (OVS mirrors over OVSDB,
``tc mirred`` via pyroute2), preparing the capture NIC, the VM inventory read from the switch,
mirror health, and the small L2 sniffer. Built by the live-capture issue; it must not know about
Elasticsearch.
"""
