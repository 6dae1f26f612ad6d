"""The ruleset lifecycle on top of suricata-update.

Sources (URLs, ``file://`` archives, local files) are fetched and merged by the real
suricata-update with Lateral's own configuration, data and cache directories; Lateral's rule
policy is suricata-update's enable/disable/modify/drop.conf. An update builds a *candidate* in a
staging directory, has Suricata validate it (``suricata -T``; rejected rules are dropped or the
candidate refused, by policy), replays the canary captures through it, and only then activates it
by an atomic symlink swap and asks a running Suricata to reload. Versions are kept for rollback;
updates are serialised by a lock, and a crash at any point leaves the active version intact.

Modules, each one concern::

    rule      Rule, parse(text), parse_file(path)          sans-I/O parser + file shell
    manifest  Manifest, RuleCounts, SourceStatus            a version's description
    store     RuleStore: versions/, active symlink, lock    atomic activation, pruning
    policy    enable/disable/modify/drop.conf entries
    sources   Sources: suricata-update as a subprocess      fetch/merge, add/remove/enable
    origin    which source each rule came from (origins.json)
    canary    canary captures (one engine replays them all), the lost-alert check
    guard     the shrink guard: refuse a candidate that lost many enabled rules
    reload    ruleset-reload-nonblocking + ruleset-stats
    update    Updater: the pipeline, rollback; report: UpdateReport
    history   history.jsonl, every update's outcome
    schedule  UpdateScheduler: updates at an interval, with jitter
    diff      differences between two versions
    settings  RulesSettings (the ``rules:`` section)
    cli       ``lateral rules …`` (registered by appliance.cli)

``rules/bundled/`` holds the demo rules the default canaries expect. This package never talks to
Elasticsearch.
"""

from .manifest import Manifest, RuleCounts
from .origin import Origins
from .report import StepReport, UpdateReport
from .rule import Rule, parse, parse_file
from .schedule import UpdateScheduler
from .settings import RulesSettings
from .store import RuleStore
from .update import Updater

__all__ = [
    "Manifest",
    "Origins",
    "Rule",
    "RuleCounts",
    "RuleStore",
    "RulesSettings",
    "StepReport",
    "UpdateReport",
    "UpdateScheduler",
    "Updater",
    "parse",
    "parse_file",
]
