"""Alert payloads (Slack, PagerDuty Events v2, Alertmanager webhook v4), the ``alerts``
configuration, secret handling, and one-attempt channel behaviour (no network: httpx's
MockTransport). Delivery through the database and a real HTTP server is in
tests/integration/test_alert_delivery.py."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import ValidationError

from observatory.schemas.alerts import (
    AM_ZERO_TIME,
    Alert,
    Observation,
    alert_as_dict,
    alertmanager_payload,
    dedup_key,
    pagerduty_payload,
    slack_payload,
    summarize,
)
from observatory.sinks.alerts import (
    PAGERDUTY_EVENTS_URL,
    AlertConfigError,
    AlertsConfig,
    PagerDutyChannel,
    Scrubber,
    SlackChannel,
    WebhookChannel,
    build_channels,
    parse_retry_after,
    render_payload,
    resolve_secret,
)
from observatory.sinks.base import Backoff

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)
KEY = "cost_spike:model=gpt-4o,service=chat,tenant=acme"
SUMMARY = (
    "cost_spike tenant=acme service=chat model=gpt-4o: cost_usd observed 12.4 vs expected 2.1 "
    "(score 8.25), window 2026-03-01 10:00-10:01 UTC"
)
TRACES = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
TEMPLATE = "https://jaeger.example/trace/{trace_id}"
SLACK_URL = "https://hooks.slack.com/services/T0000/B0000/XXXXsecretXXXXtoken"
PD_KEY = "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY12"


def firing(**changes) -> Alert:
    alert = Alert(
        dedup_key=KEY,
        sequence=1,
        state="firing",
        kind="cost_spike",
        detector="cost_robust_z",
        severity="critical",
        tenant="acme",
        subject=(("service", "chat"), ("model", "gpt-4o")),
        summary=SUMMARY,
        observed=12.4,
        expected=2.1,
        score=8.25,
        window_start=T0,
        window_end=T1,
        detected_at=T1,
        opened_at=T1,
        metric="cost_usd",
        exemplar_trace_ids=TRACES,
        session_id="sess-42",
        details=(("notification", "open"), ("anomalous_windows", 1), ("flapping", False)),
        routes=("team",),
    )
    return replace(alert, **changes)


def resolved() -> Alert:
    return firing(
        sequence=3,
        state="resolved",
        observed=2.0,
        score=0.4,
        window_start=T0 + timedelta(minutes=4),
        window_end=T0 + timedelta(minutes=5),
        detected_at=T0 + timedelta(minutes=5),
        summary="Resolved: cost_spike tenant=acme service=chat model=gpt-4o: normal for 3 windows",
        details=(("notification", "resolve"), ("resolve_reason", "normal")),
    )


# --- records -------------------------------------------------------------------------------------


def test_dedup_key_is_stable_readable_and_bounded():
    a = dedup_key("cost_spike", {"service": "chat", "model": "gpt-4o"}, tenant="acme")
    b = dedup_key("cost_spike", [("model", "gpt-4o"), ("tenant", "acme"), ("service", "chat")])
    assert a == b == KEY
    long = dedup_key("cost_spike", {"agent": "x" * 400})
    weird = dedup_key("cost_spike", {"model": "gpt 4o, fast=1"})
    for key in (long, weird):
        assert key.startswith("cost_spike:sha256:") and len(key) <= 255
    assert weird != dedup_key("cost_spike", {"model": "gpt 4o", "fast": "1"})
    with pytest.raises(ValueError, match="tenant"):
        dedup_key("k", {"tenant": "a"}, tenant="b")


def test_observation_normalises_and_validates():
    obs = Observation(
        kind="cost_spike",
        subject={"service": "chat"},  # type: ignore[arg-type]
        tenant="acme",
        window_start=T0.timestamp(),  # type: ignore[arg-type]
        window_end=T1,
        anomalous=1,  # type: ignore[arg-type]
        score=3,
        observed=None,
        expected=2,
    )
    assert obs.subject == (("service", "chat"),)
    assert obs.window_start == T0 and obs.anomalous is True and obs.expected == 2.0
    assert obs.dedup_key == "cost_spike:service=chat,tenant=acme"
    with pytest.raises(ValueError, match="timezone"):
        replace(obs, window_end=datetime(2026, 3, 1))
    with pytest.raises(ValueError, match="severity"):
        replace(obs, severity="urgent")


def test_observation_from_a_detector_verdict():
    class Verdict:  # the shape of observatory.detectors.base.Verdict
        anomalous, score, observed, expected, reason = True, 7.5, 12.4, 2.1, "level_shift"

    obs = Observation.from_verdict(
        Verdict(),
        kind="cost_spike",
        subject={"model": "gpt-4o"},
        window_start=T0,
        window_end=T1,
        tenant="acme",
        severity="error",
        details={"window_calls": 12},
    )
    assert (obs.anomalous, obs.score, obs.observed, obs.severity) == (True, 7.5, 12.4, "error")
    assert dict(obs.details) == {"window_calls": 12, "reason": "level_shift"}


def test_alert_is_frozen_and_validated():
    alert = firing()
    with pytest.raises(AttributeError):
        alert.sequence = 2  # type: ignore[misc]
    with pytest.raises(ValueError):
        firing(state="open")
    with pytest.raises(ValueError):
        firing(sequence=0)
    with pytest.raises(ValueError):
        firing(dedup_key="k" * 256)
    assert alert.dimensions == {"tenant": "acme", "service": "chat", "model": "gpt-4o"}
    assert alert.notification == "open" and resolved().notification == "resolve"


def test_summary_is_one_line_and_at_most_1024_characters():
    text = summarize(
        kind="cost_spike",
        tenant="acme",
        subject=[("agent", "a" * 3000)],
        observed=1.0,
        expected=2.0,
        score=3.0,
        window_start=T0,
        window_end=T1,
    )
    assert len(text) == 1024 and text.endswith("…") and "\n" not in text
    alert = firing(summary="s" * 5000)
    assert len(pagerduty_payload(alert)["payload"]["summary"]) == 1024
    slack = slack_payload(alert)
    assert len(slack["text"]) <= 3000
    assert len(slack["blocks"][1]["text"]["text"]) <= 3000


# --- Slack ---------------------------------------------------------------------------------------


def test_slack_trigger_payload_exact():
    assert slack_payload(firing(), trace_url_template=TEMPLATE) == {
        "text": f"[FIRING] {SUMMARY}",
        "blocks": [
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": ":rotating_light: FIRING: cost_spike",
                    "emoji": True,
                },
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": SUMMARY}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": "*Observed*\n12.4"},
                    {"type": "mrkdwn", "text": "*Expected*\n2.1"},
                    {"type": "mrkdwn", "text": "*Score*\n8.25"},
                    {"type": "mrkdwn", "text": "*Severity*\ncritical"},
                    {"type": "mrkdwn", "text": "*Window*\n2026-03-01 10:00-10:01 UTC"},
                    {"type": "mrkdwn", "text": "*Metric*\ncost_usd"},
                ],
            },
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "*Dimensions*\n`tenant` = acme · `service` = chat · `model` = gpt-4o",
                },
            },
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "*Exemplar traces*\n"
                    "<https://jaeger.example/trace/4bf92f3577b34da6a3ce929d0e0e4736"
                    "|4bf92f3577b34da6a3ce929d0e0e4736>, "
                    "<https://jaeger.example/trace/00f067aa0ba902b7|00f067aa0ba902b7>",
                },
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"detector `cost_robust_z` · session `sess-42` · "
                        f"notification #1 · key `{KEY}`",
                    }
                ],
            },
        ],
    }


def test_slack_resolve_and_renotify_headers_and_traces_without_template():
    body = slack_payload(resolved())
    assert body["text"].startswith("[RESOLVED] Resolved: cost_spike")
    assert body["blocks"][0]["text"]["text"] == ":white_check_mark: RESOLVED: cost_spike"
    traces = body["blocks"][4]["text"]["text"]
    assert traces == "*Exemplar traces*\n`4bf92f3577b34da6a3ce929d0e0e4736`, `00f067aa0ba902b7`"
    renotify = slack_payload(firing(sequence=2))
    assert renotify["blocks"][0]["text"]["text"] == ":repeat: STILL FIRING: cost_spike"
    assert renotify["text"].startswith("[STILL FIRING] ")


def test_slack_escapes_mrkdwn_control_characters():
    alert = firing(
        subject=(("model", "<!channel> & <http://evil|x>"),), summary="a <b> & c", session_id=""
    )
    body = json.dumps(slack_payload(alert))
    assert "<!channel>" not in body and "<http://evil" not in body
    assert "&lt;!channel&gt; &amp; &lt;http://evil|x&gt;" in body
    assert "session" not in slack_payload(alert)["blocks"][-1]["elements"][0]["text"]


def test_slack_blocks_respect_block_kit_limits():
    alert = firing(kind="k" * 500, subject=(("agent", "x" * 5000),), summary="s" * 5000)
    body = slack_payload(alert)
    assert len(body["blocks"][0]["text"]["text"]) <= 150
    for block in body["blocks"]:
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= 3000
        for f in block.get("fields", []):
            assert len(f["text"]) <= 2000
    assert len(body["blocks"][2]["fields"]) <= 10


# --- PagerDuty -----------------------------------------------------------------------------------


def test_pagerduty_trigger_payload_exact():
    assert pagerduty_payload(firing(), trace_url_template=TEMPLATE) == {
        "event_action": "trigger",
        "dedup_key": KEY,
        "payload": {
            "summary": SUMMARY,
            "source": "tenant=acme service=chat model=gpt-4o",
            "severity": "critical",
            "timestamp": "2026-03-01T10:01:00Z",
            "component": "cost_robust_z",
            "class": "cost_spike",
            "group": "acme",
            "custom_details": {
                "observed": 12.4,
                "expected": 2.1,
                "score": 8.25,
                "metric": "cost_usd",
                "window_start": "2026-03-01T10:00:00Z",
                "window_end": "2026-03-01T10:01:00Z",
                "dimensions": {"tenant": "acme", "service": "chat", "model": "gpt-4o"},
                "exemplar_trace_ids": list(TRACES),
                "trace_urls": [
                    "https://jaeger.example/trace/4bf92f3577b34da6a3ce929d0e0e4736",
                    "https://jaeger.example/trace/00f067aa0ba902b7",
                ],
                "session_id": "sess-42",
                "detector": "cost_robust_z",
                "notification": 1,
                "opened_at": "2026-03-01T10:01:00Z",
                "details": {"notification": "open", "anomalous_windows": 1, "flapping": False},
            },
        },
        "client": "Observatory",
        "links": [
            {
                "href": "https://jaeger.example/trace/4bf92f3577b34da6a3ce929d0e0e4736",
                "text": "Trace 4bf92f3577b34da6a3ce929d0e0e4736",
            },
            {
                "href": "https://jaeger.example/trace/00f067aa0ba902b7",
                "text": "Trace 00f067aa0ba902b7",
            },
        ],
    }


def test_pagerduty_resolve_is_the_documented_minimal_body_and_has_no_routing_key():
    assert pagerduty_payload(resolved()) == {"event_action": "resolve", "dedup_key": KEY}
    assert "routing_key" not in pagerduty_payload(firing())
    assert "links" not in pagerduty_payload(firing())  # no template, no links


def test_pagerduty_severity_values_and_non_finite_numbers():
    for severity in ("critical", "error", "warning", "info"):
        assert pagerduty_payload(firing(severity=severity))["payload"]["severity"] == severity
    body = pagerduty_payload(firing(observed=float("nan"), expected=None, score=float("inf")))
    details = body["payload"]["custom_details"]
    assert (details["observed"], details["expected"], details["score"]) == (None, None, None)
    json.dumps(body, allow_nan=False)  # strict JSON


# --- Alertmanager webhook v4 -----------------------------------------------------------------


def test_alertmanager_firing_payload_exact():
    labels = {
        "alertname": "cost_spike",
        "severity": "critical",
        "detector": "cost_robust_z",
        "tenant": "acme",
        "service": "chat",
        "model": "gpt-4o",
    }
    annotations = {
        "summary": SUMMARY,
        "description": "Observed 12.4, expected 2.1, score 8.25, "
        "window 2026-03-01 10:00-10:01 UTC.",
        "observed": "12.4",
        "expected": "2.1",
        "score": "8.25",
        "metric": "cost_usd",
        "window_start": "2026-03-01T10:00:00Z",
        "window_end": "2026-03-01T10:01:00Z",
        "exemplar_trace_ids": ",".join(TRACES),
        "trace_urls": "https://jaeger.example/trace/4bf92f3577b34da6a3ce929d0e0e4736 "
        "https://jaeger.example/trace/00f067aa0ba902b7",
        "session_id": "sess-42",
        "dedup_key": KEY,
        "notification": "1",
    }
    body = alertmanager_payload(firing(), receiver="team", trace_url_template=TEMPLATE)
    fingerprint = body["alerts"][0]["fingerprint"]
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert body == {
        "version": "4",
        "groupKey": KEY,
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "team",
        "groupLabels": {"alertname": "cost_spike"},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": annotations,
                "startsAt": "2026-03-01T10:01:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "https://jaeger.example/trace/4bf92f3577b34da6a3ce929d0e0e4736",
                "fingerprint": fingerprint,
            }
        ],
    }


def test_alertmanager_resolved_payload():
    body = alertmanager_payload(resolved(), receiver="team")
    item = body["alerts"][0]
    assert body["status"] == item["status"] == "resolved"
    assert item["startsAt"] == "2026-03-01T10:01:00Z"
    assert item["endsAt"] == "2026-03-01T10:05:00Z" != AM_ZERO_TIME
    assert item["generatorURL"] == "" and "trace_urls" not in item["annotations"]
    # Same alert, same fingerprint, firing or resolved.
    assert (
        item["fingerprint"]
        == alertmanager_payload(firing(), receiver="x")["alerts"][0]["fingerprint"]
    )


def test_alertmanager_label_names_are_sanitised():
    alert = firing(subject=(("gen_ai.request.model", "m"), ("9lives", "v"), ("severity", "s")))
    labels = alertmanager_payload(alert, receiver="r")["alerts"][0]["labels"]
    assert labels["gen_ai_request_model"] == "m"
    assert labels["_9lives"] == "v"
    assert labels["severity"] == "critical" and labels["subject_severity"] == "s"
    assert all(isinstance(v, str) for v in labels.values())


def test_trace_ids_are_percent_encoded_in_links_and_capped():
    alert = firing(exemplar_trace_ids=("a/b?c", *(f"t{i}" for i in range(10))))
    links = pagerduty_payload(alert, trace_url_template=TEMPLATE)["links"]
    assert links[0]["href"] == "https://jaeger.example/trace/a%2Fb%3Fc"
    assert len(links) == 5


def test_alert_as_dict_is_strict_json():
    data = alert_as_dict(firing(observed=float("nan")))
    assert data["observed"] is None and data["subject"] == {"service": "chat", "model": "gpt-4o"}
    json.dumps(data, allow_nan=False)


# --- configuration -------------------------------------------------------------------------------


def parse(raw: dict) -> AlertsConfig:
    return AlertsConfig.model_validate(raw)


def error_of(raw: dict) -> tuple[tuple, str]:
    with pytest.raises(ValidationError) as info:
        parse(raw)
    error = info.value.errors()[0]
    return error["loc"], error["msg"]


def test_config_defaults():
    config = parse({})
    assert config.routes == {} and config.resolve_after_windows == 3
    assert config.renotify_interval_seconds == 14400 and config.flap_window_seconds == 3600
    route = parse({"routes": {"pd": {"type": "pagerduty", "routing_key_env": "PD"}}}).routes["pd"]
    assert route.url == PAGERDUTY_EVENTS_URL
    assert (route.timeout_seconds, route.max_attempts, route.max_age_seconds) == (10, 8, 3600)
    assert (route.max_per_hour, route.send_resolved, route.min_severity) == (60, True, "info")
    policy = parse({"routes": {"pd": {"type": "pagerduty", "routing_key_env": "PD"}}})
    assert policy.lifecycle_policy().route_rules[0].name == "pd"


@pytest.mark.parametrize(
    ("raw", "loc", "message"),
    [
        ({"routes": {"t": {"type": "slack"}}}, ("routes", "t", "url_env"), "required for a slack"),
        (
            {"routes": {"t": {"type": "pagerduty"}}},
            ("routes", "t", "routing_key_env"),
            "required for a pagerduty",
        ),
        (
            {"routes": {"t": {"type": "slack", "url_env": "X", "routing_key_env": "Y"}}},
            ("routes", "t", "routing_key_env"),
            "not used by a slack route",
        ),
        (
            {"routes": {"t": {"type": "slack", "url_env": "X", "url": "https://h/x"}}},
            ("routes", "t", "url"),
            "only for pagerduty",
        ),
        (
            {"routes": {"t": {"type": "webhook", "secrets_file": "/s.yaml"}}},
            ("routes", "t", "secret_key"),
            "required with secrets_file",
        ),
        (
            {"routes": {"t": {"type": "webhook", "url_env": "X", "secret_key": "k"}}},
            ("routes", "t", "secret_key"),
            "only used with secrets_file",
        ),
        (
            {"routes": {"t": {"type": "teams", "url_env": "X"}}},
            ("routes", "t", "type"),
            "",
        ),
        (
            {"routes": {"t": {"type": "slack", "url_env": "X", "timeout_seconds": 0}}},
            ("routes", "t", "timeout_seconds"),
            "",
        ),
        (
            {"routes": {"t": {"type": "slack", "url_env": "X", "colour": "red"}}},
            ("routes", "t", "colour"),
            "",
        ),
        ({"routes": {"Bad Name": {"type": "slack", "url_env": "X"}}}, ("routes",), "route name"),
        ({"trace_url_template": "https://j/trace/{id}"}, ("trace_url_template",), "{trace_id}"),
        ({"open_after_windows": 3, "open_window": 2}, ("open_window",), "at least"),
        ({"resolve_after_windows": 0}, ("resolve_after_windows",), ""),
    ],
)
def test_config_errors_name_the_field(raw, loc, message):
    got_loc, got_message = error_of(raw)
    assert got_loc == loc
    assert message in got_message


def test_a_secret_pasted_into_url_env_is_rejected_without_being_echoed():
    raw = {"routes": {"t": {"type": "slack", "url_env": SLACK_URL}}}
    with pytest.raises(ValidationError) as info:
        parse(raw)
    loc, message = info.value.errors()[0]["loc"], info.value.errors()[0]["msg"]
    assert loc == ("routes", "t", "url_env")
    assert "environment variable" in message and "XXXXsecret" not in message


def test_missing_secret_env_var_is_one_clear_line():
    config = parse({"routes": {"oncall": {"type": "pagerduty", "routing_key_env": "PD_KEY"}}})
    with pytest.raises(AlertConfigError) as info:
        build_channels(config, env={})
    assert str(info.value) == (
        "alerts.routes.oncall.routing_key_env: environment variable PD_KEY is not set"
    )


def test_secrets_file_lookup_and_errors(tmp_path):
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(f"hook_url: {SLACK_URL}\nbroken: not-a-url-{PD_KEY}\n")
    route = {"type": "webhook", "secrets_file": str(secrets), "secret_key": "hook_url"}
    config = parse({"routes": {"hook": route}})
    assert resolve_secret("hook", config.routes["hook"]).reveal() == SLACK_URL

    def failure(**changes) -> str:
        bad = parse({"routes": {"hook": {**route, **changes}}}).routes["hook"]
        with pytest.raises(AlertConfigError) as info:
            resolve_secret("hook", bad)
        return str(info.value)

    assert failure(secret_key="nope") == (
        f"alerts.routes.hook.secret_key: no secret 'nope' in {secrets}"
    )
    message = failure(secret_key="broken")
    assert "is not an http(s) URL" in message and PD_KEY not in message
    assert "cannot read" in failure(secrets_file=str(tmp_path / "missing.yaml"))
    garbled = tmp_path / "garbled.json"
    garbled.write_text('{"hook_url": "' + SLACK_URL + '", [')
    message = failure(secrets_file=str(garbled))
    assert "not valid YAML or JSON" in message and "XXXXsecret" not in message


def test_env_secret_that_is_not_a_url_is_rejected_without_echo():
    config = parse({"routes": {"t": {"type": "slack", "url_env": "SLACK"}}})
    with pytest.raises(AlertConfigError) as info:
        build_channels(config, env={"SLACK": "xoxb-SECRETVALUE"})
    assert "SECRETVALUE" not in str(info.value) and "SLACK" in str(info.value)


# --- channels (one attempt, mocked transport) ------------------------------------------------


def channels(handler, **route_options) -> dict:
    config = parse(
        {
            "routes": {
                "slack": {"type": "slack", "url_env": "SLACK", **route_options},
                "pd": {"type": "pagerduty", "routing_key_env": "PD", **route_options},
                "hook": {"type": "webhook", "url_env": "HOOK", **route_options},
            },
            "trace_url_template": TEMPLATE,
        }
    )
    client = httpx.Client(transport=httpx.MockTransport(handler))
    env = {
        "SLACK": SLACK_URL,
        "PD": PD_KEY,
        "HOOK": "https://am.example/hook?token=s3cr3tHookToken",
    }
    return build_channels(config, env, client=client)


def test_channels_post_the_rendered_payload_with_the_secret_added_at_send_time():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202 if "pagerduty" in str(request.url) else 200, text="ok")

    chans = channels(handler)
    assert isinstance(chans["slack"], SlackChannel) and isinstance(chans["pd"], PagerDutyChannel)
    assert isinstance(chans["hook"], WebhookChannel)
    for channel in chans.values():
        payload = channel.render(firing())
        assert payload == render_payload(
            channel.type, firing(), route_name=channel.name, trace_url_template=TEMPLATE
        )
        text = json.dumps(payload)
        assert PD_KEY not in text and "XXXXsecret" not in text and "s3cr3t" not in text
        assert channel.send(payload).delivered
    slack, pd, hook = seen
    assert str(slack.url) == SLACK_URL and json.loads(slack.content)["text"].startswith("[FIRING]")
    assert str(pd.url) == PAGERDUTY_EVENTS_URL
    pd_body = json.loads(pd.content)
    assert pd_body["routing_key"] == PD_KEY and pd_body["event_action"] == "trigger"
    assert pd.headers["content-type"] == "application/json"
    assert json.loads(hook.content)["version"] == "4"
    assert json.loads(hook.content)["receiver"] == "hook"
    assert "XXXX" not in repr(chans) and PD_KEY not in repr(chans)


@pytest.mark.parametrize(
    ("status", "headers", "outcome", "retry_after"),
    [
        (200, {}, "delivered", None),
        (202, {}, "delivered", None),
        (500, {}, "retry", None),
        (503, {"Retry-After": "3"}, "retry", 3.0),
        (429, {"Retry-After": "7"}, "retry", 7.0),
        (429, {}, "retry", None),
        (408, {}, "retry", None),
        (400, {}, "failed", None),
        (403, {}, "failed", None),
        (404, {}, "failed", None),
        (410, {}, "failed", None),
        (302, {"Location": "https://elsewhere.example/"}, "failed", None),
    ],
)
def test_status_codes_are_classified(status, headers, outcome, retry_after):
    chans = channels(
        lambda request: httpx.Response(status, headers=headers, text="invalid_payload")
    )
    result = chans["slack"].send({"text": "x"})
    assert (result.outcome, result.http_status, result.retry_after) == (
        outcome,
        status,
        retry_after,
    )
    if outcome != "delivered":
        assert result.error == f"HTTP {status}: invalid_payload"


def test_transport_errors_are_retried_and_scrubbed():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect to {request.url}", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    for handler, expected in ((refuse, "ConnectError"), (slow, "ReadTimeout")):
        for channel in channels(handler).values():
            result = channel.send(channel.render(firing()))
            assert result.outcome == "retry" and expected in (result.error or "")
            assert "XXXXsecret" not in result.error and "s3cr3t" not in result.error


def test_response_body_echoing_the_secret_is_scrubbed():
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, text=f"bad request to {request.url}: {request.content!r}")

    for channel in channels(echo).values():
        result = channel.send(channel.render(firing()))
        assert result.outcome == "failed"
        for secret in ("XXXXsecretXXXXtoken", PD_KEY, "s3cr3tHookToken"):
            assert secret not in result.error


def test_httpx_request_logs_do_not_show_secrets(caplog):
    caplog.set_level(logging.DEBUG)
    for channel in channels(lambda request: httpx.Response(200)).values():
        channel.send(channel.render(firing()))
    assert "HTTP Request" in caplog.text  # httpx did log the requests...
    for secret in ("XXXXsecretXXXXtoken", PD_KEY, "s3cr3tHookToken"):
        assert secret not in caplog.text  # ...without the secrets


def test_the_log_filter_leaves_other_urls_alone(caplog):
    channels(lambda request: httpx.Response(200))  # registers the secrets
    caplog.set_level(logging.INFO)
    logging.getLogger("httpx").info("HTTP Request: POST %s", "https://api.example.com/v1/things")
    logging.getLogger("httpx").info("HTTP Request: POST %s", SLACK_URL)
    assert "https://api.example.com/v1/things" in caplog.text
    assert "XXXXsecret" not in caplog.text and "HTTP Request: POST ***" in caplog.text


def test_deliver_retries_with_full_jitter_and_honours_retry_after():
    responses = iter(
        [
            httpx.Response(500),
            httpx.Response(429, headers={"Retry-After": "2"}),
            httpx.Response(200),
        ]
    )
    sleeps: list[float] = []
    channel = channels(lambda request: next(responses))["slack"]
    result = channel.deliver(
        {"text": "x"},
        backoff=Backoff(initial_s=4.0, max_s=10.0),
        sleep=sleeps.append,
        rng=random.Random(1),
    )
    assert result.delivered and result.attempts == 3
    assert 0 <= sleeps[0] <= 4.0 and sleeps[1] == 2.0


def test_deliver_gives_up_after_max_attempts_and_at_once_on_permanent_errors():
    calls = []

    def always(status):
        def handler(request):
            calls.append(status)
            return httpx.Response(status)

        return handler

    result = channels(always(502), max_attempts=3)["slack"].deliver(
        {"text": "x"}, sleep=lambda s: None
    )
    assert result.outcome == "failed" and result.attempts == 3 and len(calls) == 3
    assert result.error.startswith("gave up after 3 attempts: HTTP 502")
    calls.clear()
    result = channels(always(404))["slack"].deliver({"text": "x"}, sleep=lambda s: None)
    assert result.outcome == "failed" and result.attempts == 1 and calls == [404]


def test_deliver_gives_up_when_a_retry_would_pass_max_age():
    now = [0.0]
    channel = channels(
        lambda r: httpx.Response(429, headers={"Retry-After": "120"}), max_age_seconds=60
    )["slack"]
    result = channel.deliver({"text": "x"}, sleep=lambda s: None, clock=lambda: now[0])
    assert result.outcome == "failed" and "max_age_seconds" in result.error


def test_retry_after_parsing():
    now = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after(" 30 ") == 30.0
    assert parse_retry_after("Sun, 01 Mar 2026 10:01:00 GMT", now=now) == 60.0
    assert parse_retry_after("", now=now) is None and parse_retry_after(None) is None
    assert parse_retry_after("-5") is None
    assert parse_retry_after("999999999") == 24 * 3600.0


def test_scrubber_hides_secrets_their_parts_and_url_paths():
    scrub = Scrubber([SLACK_URL, PD_KEY])
    text = scrub(
        f"POST {SLACK_URL} failed; path /services/T0000/B0000/XXXXsecretXXXXtoken; "
        f"key {PD_KEY}; other https://u:p@example.com/private?x=1"
    )
    assert "XXXXsecret" not in text and PD_KEY not in text and "private" not in text
    assert "u:p@" not in text and "https://example.com/***" in text
