#!/usr/bin/env python3
"""Generate sample CloudEvents for the Waymark demo journeys.

    /usr/bin/python3 scripts/gen_sample_events.py > journeys/sample_events.jsonl

Writes CloudEvents 1.0 JSON lines to stdout, sorted by time: six weeks of
activity (from 2026-03-02T00:00:00Z) of ~450 people using Acme, a SaaS
product with a small merchandise shop. The data is shaped to exercise every
path of the journeys in journeys/*.journey: entries and refused entries,
exits, goals, `wait for` received and timeout branches, splits and matches.

Standard library only and deterministic (fixed seed): the same output on
every run. Every generated event is checked against schemas/events/TYPE.json
by a small JSON Schema checker below (the subset the schemas use); a
mismatch aborts the script.

After that check, a handful of deliberately bad inputs are mixed in at
their place in time, so that a run shows dead letters, a duplicate and an
unknown event type in its summary (see BAD LINES at the end of the file):
malformed JSON, a missing id, data that breaks its schema, an invalid time,
an unsupported specversion, an unusable e-mail recipient, an event type no
journey knows, and one exact repeat of an earlier event.
"""

import datetime as dt
import hashlib
import json
import random
import re
import sys
import unicodedata
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

SEED = 20260302
UTC = dt.timezone.utc
START = dt.datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
DAYS = 42
END = START + dt.timedelta(days=DAYS)
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas" / "events"

rng = random.Random(SEED)


def minutes(n):
    return dt.timedelta(minutes=n)


def hours(n):
    return dt.timedelta(hours=n)


def days(n):
    return dt.timedelta(days=n)


def iso(t):
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id():
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def hexid(n):
    return "%0*x" % (n, rng.getrandbits(4 * n))


def chance(p):
    return rng.random() < p


def pick(weighted):
    """weighted: list of (value, weight)."""
    total = sum(w for _, w in weighted)
    x = rng.uniform(0, total)
    for v, w in weighted:
        x -= w
        if x <= 0:
            return v
    return weighted[-1][0]


_TURNS = {}


def every(name, n):
    """True on every n-th call for `name`, starting at a random turn: rare
    scenarios happen a predictable number of times instead of maybe never."""
    turn = _TURNS.setdefault(name, [rng.randrange(n), 0])
    turn[1] += 1
    return (turn[1] - 1) % n == turn[0]


def between(a, b):
    """A random instant in [a, b)."""
    span = (b - a).total_seconds()
    return a + dt.timedelta(seconds=rng.uniform(0, max(span, 0)))


# --------------------------------------------------------------------------
# Local time, as the engine computes it (engine/core/local_time.cc)

def zone(name):
    return ZoneInfo(name)


def next_local_time(t, hh, mm, weekdays, tzname):
    """First instant strictly after t that is hh:mm local on one of
    `weekdays` (0 = Monday; None = any day) in zone tzname."""
    z = zone(tzname)
    local_day = t.astimezone(z).date()
    for i in range(-1, 9):
        d = local_day + dt.timedelta(days=i)
        if weekdays is not None and d.weekday() not in weekdays:
            continue
        at = dt.datetime(d.year, d.month, d.day, hh, mm, tzinfo=z).astimezone(UTC)
        if at > t:
            return at
    raise AssertionError("unreachable")


def daytime(u, t, first=8, last=22):
    """Moves t into the person's waking hours (local first..last o'clock)."""
    z = zone(u.home_tz)
    loc = t.astimezone(z)
    if loc.hour < first:
        loc = loc.replace(hour=first, minute=rng.randrange(60), second=rng.randrange(60))
        loc = loc + dt.timedelta(minutes=rng.randrange(0, 180))
    elif loc.hour >= last:
        nxt = (loc + dt.timedelta(days=1)).date()
        loc = dt.datetime(nxt.year, nxt.month, nxt.day, first, rng.randrange(60),
                          rng.randrange(60), tzinfo=z) + dt.timedelta(minutes=rng.randrange(0, 240))
    return loc.astimezone(UTC)


# --------------------------------------------------------------------------
# The engine's hashes (engine/core/step.cc), to model what people receive:
# which win-back arm a person lands in, and the message id they click.

def split_bucket(journey, key, state):
    h = hashlib.sha256(f"{journey}/{key}/{state}".encode()).digest()
    v = int.from_bytes(h[:8], "big")
    return (v >> 11) / float(1 << 53) * 100.0


def idempotency_key(journey, state, key, seq=1, visit=1):
    return "wm-" + hashlib.sha256(f"{journey}/{state}/{key}/{seq}/{visit}".encode()).hexdigest()[:40]


# --------------------------------------------------------------------------
# A small JSON Schema checker: the subset schemas/events/*.json use.

SUPPORTED = {"$schema", "$id", "title", "description", "type", "properties", "required",
             "additionalProperties", "enum", "minLength", "minimum", "maximum", "pattern",
             "format", "items", "maxItems"}
EMAIL_RE = re.compile(r"^[^@\s\"<>(),;:\\\[\]]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
DATE_TIME_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$")


class SchemaError(Exception):
    pass


def type_ok(value, t):
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "null":
        return value is None
    raise SchemaError(f"unsupported type {t!r} in schema")


def check(schema, value, where):
    unknown = set(schema) - SUPPORTED
    if unknown:
        raise SchemaError(f"{where}: schema uses unsupported keywords {sorted(unknown)}")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(type_ok(value, t) for t in types):
            raise SchemaError(f"{where}: expected {'/'.join(types)}, got {json.dumps(value)}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(f"{where}: {json.dumps(value)} is not one of {schema['enum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            raise SchemaError(f"{where}: shorter than {schema['minLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise SchemaError(f"{where}: {value!r} does not match {schema['pattern']}")
        fmt = schema.get("format")
        if fmt == "email" and not EMAIL_RE.match(value):
            raise SchemaError(f"{where}: {value!r} is not an e-mail address")
        if fmt == "date-time" and not DATE_TIME_RE.match(value):
            raise SchemaError(f"{where}: {value!r} is not an RFC 3339 date-time")
        if fmt == "uri" and not URI_RE.match(value):
            raise SchemaError(f"{where}: {value!r} is not a URI")
        if fmt not in (None, "email", "date-time", "uri"):
            raise SchemaError(f"{where}: unsupported format {fmt!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaError(f"{where}: {value} is below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(f"{where}: {value} is above {schema['maximum']}")
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaError(f"{where}: more than {schema['maxItems']} items")
        if "items" in schema:
            for i, v in enumerate(value):
                check(schema["items"], v, f"{where}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                raise SchemaError(f"{where}: missing required field {name!r}")
        for name, v in value.items():
            if name in props:
                check(props[name], v, f"{where}.{name}")
            elif schema.get("additionalProperties", True) is False:
                raise SchemaError(f"{where}: field {name!r} is not allowed")


SCHEMAS = {p.stem: json.loads(p.read_text()) for p in SCHEMA_DIR.glob("*.json")}
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def validate_event(ev, seen_ids):
    where = f"event {ev.get('id')} ({ev.get('type')})"
    if set(ev) != {"specversion", "id", "source", "type", "subject", "time", "data"}:
        raise SchemaError(f"{where}: unexpected attributes {sorted(ev)}")
    if ev["specversion"] != "1.0":
        raise SchemaError(f"{where}: specversion")
    for attr in ("id", "source", "type", "subject", "time"):
        if not isinstance(ev[attr], str) or not ev[attr]:
            raise SchemaError(f"{where}: attribute {attr!r} must be a non-empty string")
    if (ev["source"], ev["id"]) in seen_ids:
        raise SchemaError(f"{where}: duplicate id")
    seen_ids.add((ev["source"], ev["id"]))
    if not TIME_RE.match(ev["time"]):
        raise SchemaError(f"{where}: time {ev['time']!r} is not RFC 3339 UTC")
    if ev["type"] not in SCHEMAS:
        raise SchemaError(f"{where}: no schema for type {ev['type']!r}")
    check(SCHEMAS[ev["type"]], ev["data"], f"{where}: data")


# --------------------------------------------------------------------------
# Events

EVENTS = []  # (time, serial, event)


def emit(t, source, etype, subject, data, who=None):
    """Records an event unless it falls outside the window or after the
    person's account was deleted. Returns the event (or None)."""
    t = t.replace(microsecond=0)
    if t < START or t >= END:
        return None
    if who is not None and who.deleted_at is not None and t > who.deleted_at:
        return None
    ev = {"specversion": "1.0", "id": new_id(), "source": source, "type": etype,
          "subject": subject, "time": iso(t), "data": data}
    EVENTS.append((t, len(EVENTS), ev))
    return ev


# --------------------------------------------------------------------------
# People

FIRST = ["Ana", "Ben", "Chloé", "Daniel", "Emma", "Felix", "Grace", "Hiro", "Isabel", "Jonas",
         "Kavya", "Liam", "Maria", "Noah", "Olivia", "Pedro", "Quinn", "Rahul", "Sofia", "Tom",
         "Uma", "Victor", "Wen", "Xavier", "Yara", "Zoë", "Aisha", "Bruno", "Camille", "Dev",
         "Elena", "Finn", "Greta", "Hannah", "Ivan", "Julia", "Kenji", "Lena", "Marco", "Nina",
         "Oscar", "Priya", "Rosa", "Sam", "Tara", "Lukas", "Mia", "Leon", "Sara", "Jakob",
         "Amara", "Diego", "Freya", "Hugo", "Ines", "Mateo", "Noor", "Omar", "Paula", "Ravi"]
LAST = ["Silva", "Müller", "Smith", "Nguyen", "Garcia", "Kowalski", "Tanaka", "Rossi", "Johnson",
        "Schmidt", "Patel", "Brown", "Dubois", "Jansen", "Fernández", "Lee", "Novak", "Andersen",
        "O'Brien", "Kim", "Weber", "Costa", "Murphy", "Sato", "Fischer", "Lopez", "Walker",
        "Hoffmann", "Singh", "Moreau", "Berg", "Wagner", "Taylor", "Khan", "Bauer", "Okafor",
        "Lindqvist", "Ferreira", "Chen", "Huber"]
COMPANIES = ["Northwind Traders", "Bluebird Analytics", "Hopscotch Media", "Greenfield Foods",
             "Lumen Labs", "Copperleaf Design", "Brightwater Health", "Kestrel Logistics",
             "Paperplane Studio", "Riverbend Legal", "Sundial Software", "Tidewater Marine",
             "Quarry & Co", "Atlas Robotics", "Fennel Kitchen", "Halcyon Travel", "Ironbark Build",
             "Juniper Schools", "Marigold Events", "Nimbus Cloudworks", "Orchard Finance",
             "Pinecone Games", "Redwood Realty", "Saltmarsh Brewing", "Trellis Architects",
             "Umbra Security", "Vantage Partners", "Wildflower Florists", "Yellowtail Sushi",
             "Zephyr Energy", "Alpenblick GmbH", "Donau Digital", "Seeblick Hotels",
             "Kanal Agentur", "Sakura Systems", "Maple Leaf Clinics"]
PERSONAL = [("gmail.com", 40), ("outlook.com", 10), ("yahoo.com", 8), ("hotmail.com", 6),
            ("icloud.com", 8), ("googlemail.com", 2), ("gmx.de", 5), ("web.de", 3),
            ("proton.me", 4)]
COUNTRIES = [  # code, zones, weight, locale, store
    ("US", ["America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"], 30,
     "en-US", "us-main"),
    ("CA", ["America/Toronto", "America/Vancouver"], 5, "en-CA", "ca-main"),
    ("GB", ["Europe/London"], 10, "en-GB", "uk-main"),
    ("DE", ["Europe/Berlin"], 10, "de-DE", "eu-main"),
    ("AT", ["Europe/Vienna"], 3, "de-AT", "eu-main"),
    ("CH", ["Europe/Zurich"], 3, "de-CH", "eu-main"),
    ("FR", ["Europe/Paris"], 5, "fr-FR", "eu-main"),
    ("NL", ["Europe/Amsterdam"], 4, "nl-NL", "eu-main"),
    ("ES", ["Europe/Madrid"], 3, "es-ES", "eu-main"),
    ("SE", ["Europe/Stockholm"], 2, "sv-SE", "eu-main"),
    ("IN", ["Asia/Kolkata"], 6, "en-IN", "us-main"),
    ("AU", ["Australia/Sydney", "Australia/Perth"], 4, "en-AU", "au-main"),
    ("JP", ["Asia/Tokyo"], 3, "ja-JP", "jp-main"),
    ("BR", ["America/Sao_Paulo"], 4, "pt-BR", "us-main"),
]
STORE_CURRENCY = {"us-main": "USD", "ca-main": "CAD", "uk-main": "GBP", "eu-main": "EUR",
                  "au-main": "AUD", "jp-main": "JPY", "test-us": "USD", "test-eu": "EUR"}
CURRENCY_RATE = {"USD": 1.0, "CAD": 1.35, "GBP": 0.8, "EUR": 0.92, "AUD": 1.5, "JPY": 150.0}
PRODUCTS = [  # sku, name, USD price
    ("MUG-CLASSIC", "Acme classic mug", 14.99), ("TEE-LOGO", "Logo T-shirt", 24.99),
    ("HOOD-ZIP", "Zip hoodie", 54.99), ("NB-DOT", "Dot-grid notebook", 12.49),
    ("STK-PACK", "Sticker pack", 5.99), ("CAP-SNAP", "Snapback cap", 19.99),
    ("BTL-STEEL", "Steel bottle", 27.49), ("MAT-DESK", "Desk mat", 34.99),
    ("TOTE-CAN", "Canvas tote", 16.99), ("PEN-SET", "Pen set", 9.99),
    ("SOCK-3", "Socks, 3 pairs", 17.99), ("LAMP-DESK", "Desk lamp", 64.99),
]

USED_EMAILS = set()
SERIAL = [1000]


def ascii_slug(s):
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", s.lower())


class User:
    def __init__(self, kind, personal=None):
        SERIAL[0] += rng.randrange(1, 40)
        self.uid = "usr_%06d" % SERIAL[0]
        self.kind = kind
        code, zones, _, locale, store = pick([(c, c[2]) for c in COUNTRIES])
        self.country = code
        self.home_tz = rng.choice(zones)
        self.tz_reported = self.home_tz if chance(0.88) else None  # unknown for some
        self.locale = locale
        self.store = store
        self.first = rng.choice(FIRST)
        self.last = rng.choice(LAST)
        if personal is None:
            personal = chance(0.5)
        self.company = None if personal else rng.choice(COMPANIES)
        if personal:
            domain = pick(PERSONAL)
            if code in ("DE", "AT", "CH") and chance(0.4):
                domain = rng.choice(["gmx.de", "web.de", "t-online.de"])
        else:
            domain = ascii_slug(self.company.split()[0]) + ".example"
        local = f"{ascii_slug(self.first)}.{ascii_slug(self.last)}"
        if chance(0.2):
            local = f"{ascii_slug(self.first)[0]}{ascii_slug(self.last)}"
        email = f"{local}@{domain}"
        n = 2
        while email in USED_EMAILS:
            email = f"{local}{n}@{domain}"
            n += 1
        USED_EMAILS.add(email)
        self.email = email
        self.deleted_at = None
        self.workspace = "ws_" + hexid(8)
        self.plan = None
        self.seats = 1

    def tz_field(self, data):
        if self.tz_reported:
            data["timezone"] = self.tz_reported
        return data


APP, SHOP, AUTH, BILLING = "urn:acme:app", "urn:acme:shop", "urn:acme:auth", "urn:acme:billing"
ANALYTICS, ACTIVITY, CRM, ESP = ("urn:acme:analytics", "urn:acme:activity", "urn:acme:crm",
                                 "urn:acme:esp")
CRM_IMPORT = "urn:acme:crm-import"

DIGEST_ACTIONS = {}  # uid -> [(time, action, tz)] for the weekly digest model
WINBACK_TRIGGERS = {}  # uid -> [(time, qualifies, tz, tier)]


def digest_action(u, t, action, tz=None):
    """Records something that moves the weekly digest for u: 'enter'
    (with the trigger's timezone or None), 'exit' or 'noop'."""
    if t < START or t >= END or (u.deleted_at and t > u.deleted_at):
        return
    DIGEST_ACTIONS.setdefault(u.uid, []).append((t, action, tz))


# --------------------------------------------------------------------------
# Small activity generators

def sessions(u, a, b, per_day):
    t = a
    while True:
        t = t + hours(rng.expovariate(per_day / 24.0))
        if t >= b:
            return
        t = daytime(u, t)
        if t >= b:
            return
        data = {}
        if chance(0.9):
            data["device"] = pick([("web", 60), ("desktop", 15), ("ios", 12), ("android", 10),
                                   ("api", 3)])
        if chance(0.7):
            data["country"] = u.country
        emit(t, APP, "session.started", u.uid, data, u)


PROJECT_NAMES = ["Website relaunch", "Q2 roadmap", "Hiring pipeline", "Content calendar",
                 "Product launch", "Client onboarding", "Office move", "Budget 2026",
                 "Mobile app v2", "Spring campaign", "Customer research", "Support backlog",
                 "Brand refresh", "Data migration", "Partner program", "Trade show Berlin"]


def project(u, t, sample=False):
    data = {"project_id": "prj_" + hexid(8), "workspace_id": u.workspace,
            "name": "Sample project: Product launch" if sample else rng.choice(PROJECT_NAMES),
            "is_sample": sample}
    if sample:
        data["template_used"] = "product-launch"
    elif chance(0.4):
        data["template_used"] = rng.choice(["blank", "kanban", "content-calendar", "okrs"])
    return emit(t, APP, "project.created", u.uid, data, u)


def feature(u, t, name=None):
    name = name or pick([("reports", 20), ("automations", 15), ("api", 6), ("timeline", 20),
                         ("comments", 30), ("file_upload", 25), ("templates", 10)])
    emit(t, APP, "feature.used", u.uid, {"feature": name, "workspace_id": u.workspace}, u)


def click(u, t, campaign, url, template, journey, message_id=None, provider="ses"):
    data = {"message_id": message_id or "wm-" + hexid(40), "provider": provider,
            "template": template, "journey": journey, "url": url, "campaign": campaign,
            "clicked_at": iso(t)}
    return emit(t, ESP, "email.clicked", u.uid, data, u)


def unsubscribe(u, t, lst, template, journey, method=None):
    data = {"message_id": "wm-" + hexid(40), "provider": "ses", "template": template,
            "journey": journey, "email": u.email, "list": lst,
            "method": method or pick([("link", 40), ("one_click", 45), ("preference_centre", 15)])}
    return emit(t, ESP, "email.unsubscribed", u.uid, data, u)


def delete(u, t, reason=None):
    data = {"reason": reason or pick([("user_request", 70), ("gdpr_erasure", 20), ("admin", 10)])}
    if data["reason"] == "admin":
        data["deleted_by"] = "op_" + hexid(4)
    else:
        data["deleted_by"] = u.uid
    ev = emit(t, APP, "user.deleted", u.uid, data, u)
    if ev:
        u.deleted_at = t.replace(microsecond=0)
        digest_action(u, u.deleted_at, "exit")


def subscription_started(u, t, plan, trial):
    data = {"plan": plan, "trial": trial}
    if not trial:
        data["interval"] = pick([("month", 75), ("year", 25)])
        base = {"starter": 9, "basic": 9, "pro": 19, "team": 29, "business": 49}.get(plan, 19)
        data["amount"] = float(base * 10 if data["interval"] == "year" else base) + 0.0
        data["currency"] = "USD" if u.store in ("us-main",) else pick([("USD", 50), ("EUR", 50)])
    return emit(t, BILLING, "subscription.started", u.uid, data, u)


# --------------------------------------------------------------------------
# Journeys' worlds

def new_signup(u, t0, crm=False, staff=False):
    u.plan = pick([("free", 45), ("starter", 20), ("team", 17), ("business", 10),
                   ("enterprise", 8)]) if not crm else pick([("business", 60), ("enterprise", 40)])
    u.seats = {"free": rng.randint(1, 2), "starter": rng.randint(1, 3),
               "team": rng.randint(3, 15), "business": rng.randint(5, 40),
               "enterprise": rng.randint(20, 200)}[u.plan]
    if u.company is None and u.seats >= 10 and chance(0.5):
        u.company = rng.choice(COMPANIES)
    u.opt_in = chance(0.62)
    if staff:
        u.email = f"{ascii_slug(u.first)}.{ascii_slug(u.last)}@acme.io"
        u.company = "Acme"
    first = "" if chance(0.08) else u.first
    country = u.country.lower() if (u.country in ("DE", "AT") and chance(0.2)) else u.country
    data = {"user_id": u.uid, "email": u.email, "first_name": first,
            "last_name": "" if chance(0.1) else u.last, "country": country,
            "locale": u.locale, "plan": u.plan, "seats": u.seats, "marketing_opt_in": u.opt_in}
    if u.company:
        data["company"] = u.company
    u.tz_field(data)
    if chance(0.35):
        data["utm_campaign"] = rng.choice(["spring-launch", "g2-reviews", "webinar-0312",
                                           "newsletter", "partner-zapier"])
    if chance(0.25):
        data["referrer"] = rng.choice(["https://www.google.com/", "https://news.ycombinator.com/",
                                       "https://www.g2.com/products/acme", "https://t.co/x8Kq2"])
    ev = emit(t0, CRM_IMPORT if crm else APP, "user.signup", u.uid, data, u)
    if not ev:
        return
    u.signup_event = ev
    horizon = min(END, t0 + days(14))
    if u.plan in ("team", "business") and u.opt_in:
        digest_action(u, t0, "enter", u.tz_reported)

    # Projects: the sample the app creates, a real one (or not).
    if chance(0.4):
        project(u, t0 + dt.timedelta(seconds=rng.randint(5, 90)), sample=True)
    r = rng.random()
    if r < 0.38:
        project(u, daytime(u, t0 + minutes(rng.uniform(8, 20 * 60))))
        if chance(0.5):
            project(u, daytime(u, t0 + days(rng.uniform(2, 14))))
    elif r < 0.6:
        project(u, daytime(u, t0 + days(rng.uniform(1.2, 12))))

    sessions(u, t0, horizon, per_day=rng.uniform(0.1, 0.6))
    for _ in range(rng.randint(0, 2)):
        feature(u, daytime(u, between(t0 + hours(1), horizon)))
    if chance(0.2):
        click(u, daytime(u, t0 + days(rng.uniform(1, 3))), "onboarding",
              "https://app.acme.io/projects/new", "create_first_project", "welcome_series")
    if chance(0.12):
        click(u, daytime(u, t0 + days(rng.uniform(6, 8))), "onboarding",
              "https://acme.io/tour", "feature_tour", "welcome_series")

    # Opting out of onboarding mail, a few deletions.
    if chance(0.07):
        unsubscribe(u, daytime(u, t0 + days(rng.uniform(1, 6))),
                    pick([("onboarding", 70), ("all", 30)]),
                    rng.choice(["create_first_project", "solo_getting_started", "welcome"]),
                    "welcome_series")
    elif chance(0.03):
        unsubscribe(u, daytime(u, t0 + days(rng.uniform(1, 6))), "product-updates",
                    "feature_tour", "welcome_series")

    # Trials, upgrades, digests.
    if u.plan in ("free", "starter", "team") and chance(0.42):
        trial(u, daytime(u, t0 + hours(rng.uniform(0.2, 72))))
    elif u.plan != "enterprise" and chance(0.06):
        subscription_started(u, daytime(u, t0 + days(rng.uniform(2, 20))),
                             pick([("pro", 50), ("team", 30), ("business", 20)]), False)
    if not (u.plan in ("team", "business") and u.opt_in) and chance(0.14):
        digest_subscribe(u, daytime(u, t0 + days(rng.uniform(0.5, 10))), "weekly")
    if chance(0.08):
        shopper(u, between(t0 + days(1), END))
    if chance(0.04):
        password_reset(u, daytime(u, between(t0 + days(1), END)))
    if chance(0.025):
        delete(u, daytime(u, t0 + days(rng.uniform(0.5, 10))))


def invitee(u, inviter, t0):
    u.company = inviter.company
    u.workspace = inviter.workspace
    u.seats = max(inviter.seats, 2)
    role = pick([("member", 60), ("admin", 15), ("owner", 5), ("viewer", 20)])
    data = {"user_id": u.uid, "email": u.email, "first_name": "" if chance(0.1) else u.first,
            "country": u.country, "workspace_id": u.workspace, "invited_by": inviter.uid,
            "role": role, "seats": u.seats}
    if u.company:
        data["company"] = u.company
    u.tz_field(data)
    if not emit(t0, APP, "user.invite-accepted", u.uid, data, u):
        return
    if chance(0.3):
        project(u, daytime(u, t0 + minutes(rng.uniform(20, 20 * 60))))
    sessions(u, t0, min(END, t0 + days(14)), per_day=rng.uniform(0.1, 0.6))
    for _ in range(rng.randint(0, 2)):
        feature(u, daytime(u, between(t0 + hours(2), min(END, t0 + days(20)))))
    if chance(0.1):
        digest_subscribe(u, daytime(u, t0 + days(rng.uniform(1, 7))), "weekly")
    if chance(0.05):
        unsubscribe(u, daytime(u, t0 + days(rng.uniform(1, 3))), "onboarding",
                    "invitee_collaboration_tips", "welcome_series")


def trial(u, t, granted=False, plan=None):
    z = u.home_tz
    if granted:
        plan = plan or pick([("business", 60), ("pro", 40)])
        trial_days = 14
    else:
        plan = plan or pick([("starter", 22), ("basic", 8), ("pro", 28), ("business", 14),
                             ("team", 16), ("enterprise", 7), ("Pro", 3), ("premium", 4)])
        if plan == "enterprise":
            trial_days = 30
        else:
            trial_days = pick([(14, 86), (7, 8), (21, 6)])
    billing_tz = z
    if chance(0.25):
        billing_tz = pick([("America/New_York", 40), ("Europe/Dublin", 35), ("UTC", 10),
                           ("Asia/Singapore", 15)])
    seats_invited = pick([(0, 30), (1, 20), (2, 15), (3, 10), (4, 10), (6, 10), (9, 5)])
    data = {"email": u.email, "plan": plan, "trial_days": trial_days,
            "trial_ends_at": iso(t + days(trial_days)), "billing_timezone": billing_tz,
            "seats_invited": seats_invited}
    u.tz_field(data)
    if granted:
        data["sales_rep"] = rng.choice(["rep_jlee", "rep_mkumar", "rep_sbauer"])
        ev = emit(t, CRM, "sales.trial-granted", u.uid, data, u)
    else:
        ev = emit(t, BILLING, "trial.started", u.uid, data, u)
    if not ev:
        return
    if not granted and chance(0.5):
        subscription_started(u, t + dt.timedelta(seconds=rng.randint(1, 20)),
                             plan.lower(), True)
    ends = t + days(trial_days)
    entered = granted or (plan != "enterprise" and trial_days <= 14)

    # Moments of the journey (trial_expiry.journey), to time what people do.
    jz = u.tz_reported or "Europe/Berlin"
    few_days = next_local_time(t + days(10), 10, 0, None, jz)
    bz = billing_tz
    last_call = next_local_time(few_days + days(2), 16, 0, None, bz)

    # Trying the paid-only features (the `engaged` goal).
    if chance(0.45):
        feature(u, daytime(u, t + days(rng.uniform(0.5, 9))),
                rng.choice(["reports", "automations", "api"]))
    sessions(u, t, min(END, ends), per_day=rng.uniform(0.1, 0.4))

    r = rng.random()
    if r < 0.24:
        # Card on file early, billing converts at the end of the trial.
        emit(daytime(u, t + days(rng.uniform(1, 11))), BILLING, "billing.payment-method-added",
             u.uid, {"method_type": pick([("card", 80), ("sepa_debit", 12), ("ach_debit", 8)]),
                     "is_default": True}, u)
        subscription_started(u, ends + minutes(rng.uniform(0, 30)), plan.lower(), False)
    elif r < 0.34:
        # Upgrades in the app before the trial ends.
        subscription_started(u, daytime(u, t + days(rng.uniform(2, 9.5))), plan.lower(), False)
    elif r < 0.44:
        reason = pick([("too_expensive", 30), ("missing_features", 25), ("not_now", 25),
                       ("chose_competitor", 20)])
        data = {"reason": reason}
        if chance(0.4):
            data["comment"] = rng.choice(["We went with a spreadsheet for now.",
                                          "Needs Gantt charts.", "Budget freeze until Q3.",
                                          "Too many features for a team of two."])
        emit(daytime(u, t + days(rng.uniform(1, 12))), BILLING, "trial.canceled", u.uid, data, u)
    elif r < 0.56 and entered:
        # A card at the last minute, while the journey waits for one.
        card = last_call + hours(rng.uniform(1, 40))
        emit(card, BILLING, "billing.payment-method-added", u.uid,
             {"method_type": "card", "is_default": True}, u)
        subscription_started(u, max(ends, card) + minutes(rng.uniform(1, 30)), plan.lower(), False)
    else:
        pass  # the trial lapses

    # A few people start another trial soon after (refused: once per 30d).
    if chance(0.05):
        trial(u, daytime(u, ends + days(rng.uniform(1, 10))),
              plan=pick([("pro", 50), ("business", 50)]))


def digest_subscribe(u, t, frequency):
    data = {"email": u.email, "frequency": frequency}
    u.tz_field(data)
    if emit(t, APP, "digest.subscribed", u.uid, data, u):
        digest_action(u, t.replace(microsecond=0), "enter" if frequency == "weekly" else "exit",
                      u.tz_reported)


def digest_unsubscribe(u, t, method=None):
    data = {"method": method or pick([("link", 50), ("one_click", 35), ("settings", 15)])}
    if emit(t, APP, "digest.unsubscribed", u.uid, data, u):
        digest_action(u, t.replace(microsecond=0), "exit")


def shopper(u, t):
    """One cart for u starting around t, and what became of it."""
    t = daytime(u, t, 7, 23)
    if t >= END:
        return
    store = u.store if chance(0.97) else rng.choice(["test-us", "test-eu"])
    currency = STORE_CURRENCY[store]
    rate = CURRENCY_RATE[currency]

    def price(usd):
        if currency == "JPY":
            return int(round(usd * rate, -1))
        return round(int(usd * rate) + 0.99, 2) if usd * rate > 1 else 0.99

    cart_id = "cart_" + hexid(10)
    has_email = chance(0.92)
    coupon_recent = chance(0.2)
    catalogue = rng.sample(PRODUCTS, 6)
    items = []
    updates = []
    n_updates = pick([(1, 40), (2, 35), (3, 17), (4, 8)])
    at = t
    k = 0
    for n in range(n_updates):
        # The first snapshot may already hold a few items (a saved wishlist,
        # "buy the look"); later updates add one more each.
        adds = pick([(1, 55), (2, 25), (3, 15), (4, 5)]) if n == 0 else 1
        for _ in range(adds):
            sku, name, usd = catalogue[k % len(catalogue)]
            k += 1
            existing = [i for i in items if i["sku"] == sku]
            if existing:
                existing[0]["quantity"] += 1
                continue
            item = {"sku": sku, "name": name, "quantity": pick([(1, 80), (2, 15), (3, 5)]),
                    "unit_price": price(usd)}
            if chance(0.7):
                item["image_url"] = f"https://shop.acme.io/img/{sku.lower()}.jpg"
            items.append(item)
        updates.append((at, json.loads(json.dumps(items))))
        at = at + minutes(rng.uniform(0.5, 9))

    def cart_event(when, its):
        total = round(sum(i["quantity"] * i["unit_price"] for i in its), 2)
        if currency == "JPY":
            total = int(total)
        data = {"cart_id": cart_id, "store_id": store,
                "item_count": sum(i["quantity"] for i in its), "items": its,
                "cart_total": total, "currency": currency, "coupon_used_recently": coupon_recent}
        if has_email:
            data["email"] = u.email
        u.tz_field(data)
        emit(when, SHOP, "cart.updated", u.uid, data, u)
        return data

    first = None
    for when, its in updates:
        d = cart_event(when, its)
        first = first or d
    final = d
    last_update = updates[-1][0]
    coupon = (first["cart_total"] >= 49.99 and currency in ("USD", "EUR", "GBP")
              and not coupon_recent)

    def order(when, use_coupon=False):
        total = final["cart_total"]
        data = {"order_id": "ord_" + hexid(10), "cart_id": cart_id, "total": total,
                "currency": currency}
        if use_coupon:
            data["coupon_code"] = "CART10"
            data["total"] = round(total * 0.9, 2) if currency != "JPY" else int(total * 0.9)
        emit(when, SHOP, "order.placed", u.uid, data, u)

    r = rng.random()
    if r < 0.28:  # checks out within the hour: no mail at all
        order(last_update + minutes(rng.uniform(2, max(3, 58 - (last_update - t).seconds / 60))))
    elif r < 0.45:  # after the reminder, within the day
        order(t + hours(rng.uniform(1.2, 23.5)))
    elif r < 0.58:  # after the coupon / last call
        order(t + hours(rng.uniform(25, 70)), use_coupon=coupon and chance(0.75))
    elif r < 0.64:  # empties the cart
        cart_event(t + hours(rng.uniform(0.3, 20)), [])
    elif r < 0.68:  # much later
        order(t + days(rng.uniform(3.5, 6.5)))
    # else: never comes back
    if chance(0.1):
        click(u, t + hours(rng.uniform(1.5, 30)), "cart",
              f"https://shop.acme.io/cart/{cart_id}", "cart_reminder", "abandoned_cart")


RESET_UA = ["Mozilla/5.0 (Macintosh; Intel Mac OS X 14_3) AppleWebKit/605.1.15 Safari/605.1.15",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/122.0 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_3 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"]


def ip():
    return f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def reset_request(u, t, typed=None, scheme="https"):
    typed = typed if typed is not None else u.email
    data = {"email": typed.strip(),
            "reset_url": f"{scheme}://app.acme.io/reset-password?token={hexid(32)}",
            "expires_at": iso(t + hours(1)), "ip": ip(), "user_agent": rng.choice(RESET_UA)}
    return emit(t, AUTH, "user.password-reset-requested", typed, data, u)


def password_changed(u, t, method, subject=None):
    emit(t, AUTH, "user.password-changed", subject or u.email, {"method": method, "ip": ip()}, u)


def password_reset(u, t):
    r = rng.random()
    typed = u.email
    if r < 0.1:
        typed = u.email[0].upper() + u.email[1:]
    elif r < 0.15:
        typed = u.email + " "
    elif r < 0.17:
        typed = u.email.upper()
    if every("http_reset_link", 20):
        # A bug in the auth service: an http:// link. The journey ignores it
        # and the person asks again a minute later (and gets a good link).
        reset_request(u, t, typed, scheme="http")
        t = t + minutes(rng.uniform(1, 4))
    if not reset_request(u, t, typed):
        return
    if every("account_locked", 15):  # the fraud team steps in
        emit(t + minutes(rng.uniform(2, 40)), AUTH, "user.locked", u.email,
             {"reason": rng.choice(["credential_stuffing", "suspicious_login", "chargeback_risk"]),
              "locked_by": "op_" + hexid(4)}, u)
        return
    r = rng.random()
    if r < 0.6:  # uses the link
        password_changed(u, t + minutes(rng.uniform(1, 45)), "reset_link")
    elif r < 0.7:  # asks again (and again), then uses the newest link
        again = t
        for _ in range(pick([(1, 50), (2, 30), (3, 20)])):  # 4 alive: one too many
            again = again + minutes(rng.uniform(1, 6))
            reset_request(u, again, typed)
        password_changed(u, again + minutes(rng.uniform(1, 20)), "reset_link")
    elif r < 0.75:  # too late: the link expired, they change it in the settings later
        password_changed(u, t + hours(rng.uniform(3, 30)), "settings")
    # else: never uses it; the link expires


def customer(u):
    """A paying (or formerly paying) customer who was around before March."""
    u.plan = pick([("starter", 30), ("pro", 40), ("team", 15), ("business", 15)])
    u.tier = u.plan if chance(0.92) else u.plan.capitalize()
    u.months = pick([(1, 8), (2, 10), (3, 12), (6, 20), (12, 25), (24, 15), (40, 10)])
    u.ltv = round(u.months * {"starter": 9, "pro": 19, "team": 29, "business": 49}[u.plan]
                  * rng.uniform(0.8, 1.2), 2)
    u.seats = rng.randint(1, 25)
    fate = pick([("active", 60), ("dormant", 22), ("cancels", 18)])

    if fate == "dormant":
        last_seen = START - days(rng.uniform(8, 80))
        u.sentiment = round(rng.choice([0.0, 0.0, rng.uniform(-1, 1)]), 2)
        for threshold in (30, 45, 60, 75, 90):
            night = last_seen + days(threshold)
            night = night.replace(hour=2, minute=rng.randrange(10, 50), second=rng.randrange(60))
            data = {"email": u.email, "tier": u.tier, "days_inactive": threshold,
                    "last_seen_at": iso(last_seen), "lifetime_value": u.ltv,
                    "support_sentiment": u.sentiment}
            u.tz_field(data)
            if emit(night, ANALYTICS, "user.inactive", u.uid, data, u):
                ok = threshold >= 60 and u.ltv > 49.99 and u.sentiment > -0.5
                WINBACK_TRIGGERS.setdefault(u.uid, []).append((night.replace(microsecond=0), ok))
    else:
        sessions(u, START, END, per_day=rng.uniform(0.05, 0.35))
        for _ in range(rng.randint(0, 3)):
            feature(u, daytime(u, between(START, END)))
        if chance(0.3):
            project(u, daytime(u, between(START, END)))

    if fate == "cancels":
        t = daytime(u, between(START + hours(6), END - days(8)))
        reason = pick([("too_expensive", 28), ("missing_features", 18), ("switched_competitor", 14),
                       ("no_longer_needed", 18), ("other", 8), ("fraud", 4), ("chargeback", 4),
                       ("duplicate_account", 6)])
        data = {"email": u.email, "tier": u.tier, "reason": reason,
                "months_subscribed": u.months, "ends_at": iso(t + days(rng.randint(3, 28)))}
        u.tz_field(data)
        if emit(t, BILLING, "subscription.canceled", u.uid, data, u):
            ok = reason not in ("fraud", "chargeback", "duplicate_account") and u.months >= 2
            WINBACK_TRIGGERS.setdefault(u.uid, []).append((t.replace(microsecond=0), ok))

    # Weekly digest subscribers, mostly at the start of the period.
    r = rng.random()
    if fate != "dormant" and r < 0.42:
        digest_subscribe(u, daytime(u, between(START, START + days(5))), "weekly")
        r2 = rng.random()
        if r2 < 0.08:
            digest_unsubscribe(u, daytime(u, between(START + days(8), END - days(6))))
            if chance(0.5):  # changes their mind
                digest_subscribe(u, daytime(u, between(END - days(9), END - days(2))), "weekly")
        elif r2 < 0.13:
            digest_subscribe(u, daytime(u, between(START + days(8), END)), "daily")
        elif r2 < 0.17:  # clicks "weekly" again in the settings: already subscribed
            digest_subscribe(u, daytime(u, between(START + days(3), END)), "weekly")
        elif r2 < 0.2:
            digest_subscribe(u, daytime(u, between(START + days(10), END)), "never")
    elif fate != "dormant" and r < 0.5:
        digest_subscribe(u, daytime(u, between(START, END - days(3))), "daily")

    if chance(0.42):
        password_reset(u, daytime(u, between(START, END - hours(2))))
    if chance(0.05):
        password_changed(u, daytime(u, between(START, END)), "settings")
    if fate != "dormant" and chance(0.4):
        for k in range(pick([(1, 60), (2, 30), (3, 10)])):
            shopper(u, between(START, END - hours(3)))
    if chance(0.06):
        trial(u, daytime(u, between(START, END - days(10))), granted=True)
    if chance(0.015):
        delete(u, daytime(u, between(START + days(7), END)), "gdpr_erasure")


def winback_responses(u):
    """Reactions to the win-back offer, for people the journey enters."""
    trig = sorted(WINBACK_TRIGGERS.get(u.uid, []))
    entry = next((t for t, ok in trig if ok), None)
    if entry is None:
        return
    tz = u.tz_reported or "UTC"
    offer = next_local_time(entry + days(1) + hours(12), 10, 30, {1, 2, 3}, tz)
    bucket = split_bucket("winback", u.uid, "offer")
    arm = "discount" if bucket < 45 else "story" if bucket < 87.5 else "holdout"
    after = offer + minutes(rng.uniform(20, 60 * 60))
    if chance(0.07):
        # Changes their mind before any mail goes out.
        subscription_started(u, daytime(u, entry + hours(rng.uniform(3, 30))), u.plan, False)
        return
    if arm == "discount":
        mid = idempotency_key("winback", "offer.discount.1", u.uid)
        if chance(0.5):
            click(u, after, "winback", "https://app.acme.io/billing?offer=winback20",
                  "winback_discount_20", "winback", mid)
            if chance(0.45):
                subscription_started(u, after + hours(rng.uniform(0.5, 50)), u.plan, False)
        elif chance(0.15):  # comes back without clicking, while the journey still waits
            subscription_started(u, daytime(u, offer + days(rng.uniform(0.5, 4.5))), u.plan, False)
    elif arm == "story":
        mid = idempotency_key("winback", "offer.story.1", u.uid)
        r = rng.random()
        if r < 0.35:
            click(u, after, "winback", "https://acme.io/changelog", "winback_whats_new", "winback",
                  mid)
        elif r < 0.45:  # clicked, but not through to billing or the changelog
            click(u, after, "winback", "https://acme.io/blog/automations-2", "winback_whats_new",
                  "winback", mid)
        if chance(0.1):
            subscription_started(u, daytime(u, offer + days(rng.uniform(0.5, 12))), u.plan, False)
    else:
        if chance(0.08):
            subscription_started(u, daytime(u, offer + days(rng.uniform(1, 12))), u.plan, False)
    if arm != "holdout" and every("winback_complaint", 12):
        emit(offer + hours(rng.uniform(1, 30)), ESP, "email.complained", u.uid,
             {"message_id": idempotency_key("winback", f"offer.{arm}.1", u.uid), "provider": "ses",
              "template": "winback_discount_20" if arm == "discount" else "winback_whats_new",
              "journey": "winback", "email": u.email, "feedback_type": "abuse"}, u)
    if chance(0.3):
        sessions(u, offer, min(END, offer + days(12)), per_day=0.3)


def weekly_digests(u):
    """digest.ready answers for the Mondays on which u's weekly digest runs
    (the activity service answers the journey's digest.requested)."""
    actions = sorted(DIGEST_ACTIONS.get(u.uid, []), key=lambda a: a[0])
    active_tz = None  # zone of the running instance, or None when not running
    entered_at = None
    periods = []  # (entered_at, left_at, tz)
    for t, action, tz in actions:
        if action == "enter" and active_tz is None:
            active_tz = tz or "America/New_York"
            entered_at = t
        elif action == "exit" and active_tz is not None:
            periods.append((entered_at, t, active_tz))
            active_tz = None
    if active_tz is not None:
        periods.append((entered_at, END, active_tz))
    profile = pick([("busy", 35), ("steady", 35), ("quiet", 30)])
    for a, b, tz in periods:
        monday = next_local_time(a, 9, 0, {0}, tz)
        while monday < b and monday < END:
            r = rng.random()
            if r < 0.04:
                pass  # the activity service never answers: digest.skipped
            else:
                late = r < 0.08  # answers after the journey stopped waiting
                at = monday + dt.timedelta(seconds=rng.randint(1200, 2400) if late
                                           else rng.randint(15, 600))
                week = (monday - days(7)).astimezone(zone(tz)).isocalendar()
                data = {"period_days": 7, "week": f"{week[0]}-W{week[1]:02d}"}
                busy = {"busy": 0.7, "steady": 0.35, "quiet": 0.1}[profile]
                q = rng.random()
                if q < 0.08:
                    data["activity_count"] = 0
                elif q < 0.08 + (1 - busy) * 0.5:
                    data["activity_count"] = rng.randint(1, 4)
                    if chance(0.3):
                        data["top_projects"] = digest_projects(1)
                else:
                    data["activity_count"] = rng.randint(5, 240)
                    if chance(0.05):
                        pass  # no project breakdown: the light digest
                    elif chance(busy):
                        data["top_projects"] = digest_projects(rng.randint(3, 6))
                    else:
                        data["top_projects"] = digest_projects(rng.randint(1, 2))
                emit(at, ACTIVITY, "digest.ready", u.uid, data, u)
            monday = next_local_time(monday, 9, 0, {0}, tz)


def digest_projects(n):
    names = rng.sample(PROJECT_NAMES, n)
    out = []
    counts = sorted((rng.randint(1, 90) for _ in names), reverse=True)
    for name, c in zip(names, counts):
        p = {"project_id": "prj_" + hexid(8), "name": name}
        if chance(0.8):
            p["events"] = c
        out.append(p)
    return out


# --------------------------------------------------------------------------
# The population

def signup_time(u):
    # More sign-ups on weekdays, during the day.
    while True:
        t = daytime(u, between(START, END - hours(1)))
        if t.astimezone(zone(u.home_tz)).weekday() < 5 or chance(0.4):
            return t


def main():
    customers = [User("customer") for _ in range(150)]
    signups = [User("signup") for _ in range(205)]
    crm_imports = [User("signup", personal=False) for _ in range(8)]
    staff = [User("signup") for _ in range(3)]
    invitees = [User("invitee") for _ in range(45)]
    shop_only = [User("shopper") for _ in range(35)]

    for u in customers:
        customer(u)
    for u in signups:
        new_signup(u, signup_time(u))
    for u in crm_imports:
        new_signup(u, signup_time(u), crm=True)
    for u in staff:
        new_signup(u, signup_time(u), staff=True)
    hosts = [u for u in customers + signups if getattr(u, "seats", 1) >= 2 and u.plan]
    for u in invitees:
        invitee(u, rng.choice(hosts), signup_time(u))
    for u in shop_only:
        for _ in range(pick([(1, 60), (2, 30), (3, 10)])):
            shopper(u, between(START, END - hours(2)))

    # Some accounts go away while journeys are running for them.
    for u in rng.sample(customers, 3) + rng.sample(signups, 3):
        if u.deleted_at is None:
            delete(u, daytime(u, between(START + days(3), END - days(1))))

    everyone = customers + signups + crm_imports + staff + invitees + shop_only
    for u in everyone:
        winback_responses(u)
        weekly_digests(u)

    # People delete their accounts after events were planned for them:
    # drop anything that would come after the deletion.
    by_uid = {u.uid: u for u in everyone}
    by_email = {u.email: u for u in everyone}
    kept = []
    for t, serial, ev in EVENTS:
        who = by_uid.get(ev["subject"]) or by_email.get(ev["subject"].strip().lower())
        if who and who.deleted_at and t > who.deleted_at:
            continue
        kept.append((t, serial, ev))
    kept.sort(key=lambda x: (x[0], x[1]))

    seen = set()
    for _, _, ev in kept:
        validate_event(ev, seen)

    lines = [(t, json.dumps(ev, ensure_ascii=False, separators=(",", ":"))) for t, _, ev in kept]
    lines = add_bad_lines(lines, kept, everyone)
    out = sys.stdout
    for _, line in lines:
        out.write(line + "\n")
    n_bad = sum(1 for t, _ in lines) - len(kept)
    print(f"gen_sample_events: {len(kept)} valid events + {n_bad} bad/duplicate lines, "
          f"{iso(kept[0][0])} .. {iso(kept[-1][0])}", file=sys.stderr)


# --------------------------------------------------------------------------
# BAD LINES: inputs that must not get through, placed among the others.

def add_bad_lines(lines, kept, everyone):
    def near(frac):
        return START + dt.timedelta(seconds=DAYS * 86400 * frac)

    def line(obj):
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))

    def ce(t, source, etype, subject, data, **override):
        ev = {"specversion": "1.0", "id": new_id(), "source": source, "type": etype,
              "subject": subject, "time": iso(t), "data": data}
        ev.update(override)
        return ev

    shoppers = [ev for _, _, ev in kept if ev["type"] == "cart.updated"]
    u = rng.choice([x for x in everyone if x.deleted_at is None])
    bad = []

    # 1. Malformed JSON: a cart update cut off mid-line (a crashed producer).
    t = near(0.11)
    cart = ce(t, SHOP, "cart.updated", u.uid,
              {"cart_id": "cart_" + hexid(10), "store_id": "us-main", "email": u.email,
               "item_count": 2, "items": [{"sku": "MUG-CLASSIC", "quantity": 2,
                                           "unit_price": 14.99}],
               "cart_total": 29.98, "currency": "USD", "coupon_used_recently": False})
    text = line(cart)
    bad.append((t, text[: int(len(text) * 0.62)]))

    # 2. Malformed JSON: trailing commas from a hand-written test script.
    t = near(0.23)
    bad.append((t, '{"specversion":"1.0","id":"%s","source":"urn:acme:app","type":"session.started",'
                   '"subject":"%s","time":"%s","data":{"device":"web",},}' % (new_id(), u.uid, iso(t))))

    # 3. Missing id.
    t = near(0.31)
    ev = ce(t, APP, "feature.used", u.uid, {"feature": "reports", "workspace_id": u.workspace})
    del ev["id"]
    bad.append((t, line(ev)))

    # 4. A string where the schema wants a number (item_count "2").
    src = rng.choice([e for e in shoppers if near(0.4) < parse(e["time"]) < near(0.6)])
    t = parse(src["time"]) + dt.timedelta(seconds=40)
    data = json.loads(json.dumps(src["data"]))
    data["item_count"] = str(data["item_count"])
    bad.append((t, line(ce(t, SHOP, "cart.updated", src["subject"], data))))

    # 5. A required field missing: a sign-up without its country; the app
    #    re-sends it correctly a minute later (the valid event is in the file).
    signup = rng.choice([e for _, _, e in kept if e["type"] == "user.signup"
                         and e["source"] == APP and parse(e["time"]) > near(0.5)])
    t = parse(signup["time"]) - dt.timedelta(seconds=70)
    data = dict(signup["data"])
    del data["country"]
    bad.append((t, line(ce(t, APP, "user.signup", signup["subject"], data))))

    # 6. A field the schema does not have.
    t = near(0.57)
    bad.append((t, line(ce(t, APP, "digest.subscribed", u.uid,
                           {"email": u.email, "frequency": "weekly", "channel": "email"}))))

    # 7. A value outside the enum.
    t = near(0.64)
    bad.append((t, line(ce(t, BILLING, "subscription.canceled", u.uid,
                           {"email": u.email, "tier": "pro", "reason": "price",
                            "months_subscribed": 7}))))

    # 8. A time that is not RFC 3339.
    t = near(0.7)
    ev = ce(t, APP, "project.created", u.uid, {"project_id": "prj_" + hexid(8),
                                               "is_sample": False, "name": "Q3 planning"})
    ev["time"] = t.strftime("%Y-%m-%d %H:%M:%S")
    bad.append((t, line(ev)))

    # 9. An old producer still sending CloudEvents 0.3.
    t = near(0.78)
    bad.append((t, line(ce(t, APP, "session.started", u.uid, {"device": "ios"},
                           specversion="0.3"))))

    # 10. A reset request for an address with a typo: the event is fine, the
    #     send cannot go anywhere (dead letter at the send).
    t = near(0.84)
    typo = "jordan.lee@gmailcom"
    bad.append((t, line(ce(t, AUTH, "user.password-reset-requested", typo,
                           {"email": typo,
                            "reset_url": f"https://app.acme.io/reset-password?token={hexid(32)}",
                            "expires_at": iso(t + hours(1)), "ip": ip()}))))

    # 11. An event type no journey (and no schema) knows.
    t = near(0.9)
    bad.append((t, line(ce(t, BILLING, "invoice.paid", u.uid,
                           {"invoice_id": "in_" + hexid(12), "amount": 190.0,
                            "currency": "USD"}))))

    # 12. An exact repeat of an earlier order (a webhook retried by the shop).
    orders = [(t0, e) for t0, _, e in kept if e["type"] == "order.placed" and
              near(0.3) < t0 < near(0.5)]
    t0, ev = rng.choice(orders)
    bad.append((t0 + minutes(3), line(ev)))

    merged = [(t, 0, i, s) for i, (t, s) in enumerate(lines)]
    merged += [(t.replace(microsecond=0), 1, i, s) for i, (t, s) in enumerate(bad)]
    merged.sort(key=lambda x: (x[0], x[1], x[2]))
    return [(t, s) for t, _, _, s in merged]


def parse(s):
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


if __name__ == "__main__":
    try:
        main()
    except SchemaError as e:
        print(f"gen_sample_events: schema check failed: {e}", file=sys.stderr)
        sys.exit(1)
