"""The ruleset lifecycle on top of suricata-update: sources, enable/disable/modify, local rules,
candidate → validate → canary → activate, reload, rollback. ``rules/bundled/`` holds the small
demo rule file Lateral ships. It must not talk to Elasticsearch.
"""
