"""What a message says: facts of an alert, Kibana links, README's Slack example."""

from __future__ import annotations

import re

import orjson

from ingest.notify.message import ALERTS_DATA_VIEW, ALERTS_SEARCH, Alert, Facts, Links, Summary, clean
from ingest.notify.outputs.slack import alert_payload
from tests.conftest import ROOT
from tests.notify.conftest import sample_alerts


def test_links_open_saved_objects_that_setup_imports() -> None:
    objects = {o["id"]: o for o in map(orjson.loads, (ROOT / "kibana" / "audit.ndjson").read_text().splitlines())}
    assert objects[ALERTS_DATA_VIEW]["type"] == "index-pattern"
    assert objects[ALERTS_DATA_VIEW]["attributes"]["title"] == "audit-alerts-*"
    assert objects[ALERTS_SEARCH]["type"] == "search"
    assert objects[ALERTS_SEARCH]["references"][0]["id"] == ALERTS_DATA_VIEW


def test_links_with_a_space_and_without_kibana() -> None:
    alert = Alert("new_country-ab/c", "audit-alerts-2024.05.17", {"@timestamp": "2024-05-17T15:30:11.000000Z"})
    links = Links.build("https://kibana.example.org/", "secops")
    assert links.document(alert) == ("https://kibana.example.org/s/secops/app/discover#/doc/audit-ingest-alerts/"
                                     "audit-alerts-2024.05.17?id=new_country-ab%2Fc")
    assert Links.build("http://k:5601", "default").document(alert) == (
        "http://k:5601/app/discover#/doc/audit-ingest-alerts/audit-alerts-2024.05.17?id=new_country-ab%2Fc")
    assert links.alerts("not a time", None) == "https://kibana.example.org/s/secops/app/discover#/view/audit-search-alerts"
    none = Links.build(None)
    assert none.document(alert) is None and none.alerts("2024-05-17T15:30:11Z", "2024-05-17T15:30:11Z") is None


def test_clean_makes_one_short_line() -> None:
    assert clean("root\nInjected: line\r\x1b[31mred\x00") == "root Injected: line  [31mred"
    assert clean("x" * 300, 10) == "xxxxxxxxx…"
    assert clean(42) == "42"


def test_facts_of_a_sparse_alert() -> None:
    f = Facts.of(Alert("a-1", "audit-alerts-x", {"rule": {"name": "unmapped_key"}, "event": {"severity": 47},
                                                 "system": {"auth": {"ssh": {"key": {"owner": "SSH Key Not Mapped"}}}},
                                                 "user": {"name": "deploy"}}), Links(None))
    assert f.rows() == [("Rule", "unmapped_key"), ("Severity", "47"), ("User", "deploy"),
                        ("Key owner", "SSH Key Not Mapped")]
    assert f.headline() == "unmapped_key (user deploy)" and f.link is None
    assert Facts.of(Alert("b", "i", {}), Links(None)).rows() == [("Rule", "alert")]


def test_summary_counts_by_rule_over_the_time_of_the_alerts() -> None:
    alerts = sample_alerts() + sample_alerts("auth.log")
    s = Summary.of("ops", 20, alerts, Links.build("https://k"))
    assert s.by_rule == [("new_country", 2), ("brute_force", 1)]
    assert (s.start, s.end) == ("2024-05-17T15:30:11.000000Z", "2024-05-17T16:00:40.000000Z")
    assert s.headline() == "3 more alerts (new_country ×2, brute_force ×1): rate limit of 20 messages a minute reached"
    assert s.link == ("https://k/app/discover#/view/audit-search-alerts"
                      "?_g=(time:(from:'2024-05-17T14:30:11.000000Z',to:'2024-05-17T17:00:40.000000Z'))")


def test_readme_slack_example_is_what_is_sent() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Notifications"):readme.index("**Delivery: one message per alert")]
    example = orjson.loads(re.search(r"```json\n(.*?)```", section, re.S)[1])  # type: ignore[index]
    [alert] = sample_alerts()
    assert example == alert_payload(alert, Facts.of(alert, Links.build("https://kibana.example.org")))
