#!/usr/bin/env python3
"""Regenerate the accountsync samples, the demo/production configs and the expected results.

Run from the repository root (any directory works, paths are relative to this file):

    python3 samples/generate.py

Python 3 standard library only, deterministic (fixed seed).

What it writes:

    samples/crm-export-2026-12-02.csv     night 1: UTF-8 BOM, CRLF, 320 data rows
    samples/crm-export-2026-12-03.csv     night 2: no BOM, LF, the night-1 rows with a few edits
    samples/sandbox-accounts.csv          accounts that exist in accountsync-sandbox
    samples/README.md                     which row carries which defect
    config/demo.toml                      the samples mapped for the sandbox
    tests/data/expected/night{1,2}-{bodies.json,errors.csv,summary.json}

The second half of this file is an INDEPENDENT oracle of CONTRACT.md sections 3-6: it
parses the CSV bytes it has just written (it does not reuse the in-memory rows), applies the
normalization / validation / duplicate / diff rules, simulates the sandbox API, and writes
what the product must send and report. It deliberately shares no code with the Rust crate.

Deliberate defects are listed in the SPECIAL table below, one entry per row with a comment;
randomness only fills the clean bulk rows.
"""

import csv
import datetime
import io
import json
import os
import random
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

NIGHT1_NAME = "crm-export-2026-12-02.csv"
NIGHT2_NAME = "crm-export-2026-12-03.csv"
N_ROWS = 320
SEED = 20261202

# --------------------------------------------------------------------------------------------
# The CRM export layout. API field -> CRM header. "Owner" and "Last Modified" are not mapped
# and must be ignored by the product.
# --------------------------------------------------------------------------------------------

FIELD_COLUMNS = [  # (api field, CRM header), in API order
    ("status", "Status"),
    ("verified", "Verified"),
    ("email", "Email"),
    ("clientuserid", "Client User ID"),
    ("salutation", "Salutation"),
    ("firstname", "First Name"),
    ("lastname", "Last Name"),
    ("phonenumber", "Phone"),
    ("mobilenumber", "Mobile"),
    ("dateofbirth", "Date of Birth"),
    ("gender", "Gender"),
    ("marketingallowed", "Marketing Opt-In"),
]
ADDRESS_COLUMNS = [  # addresstype "home"
    ("housename", "House Name"),
    ("housenumber", "House Number"),
    ("street", "Street"),
    ("towncity", "City"),
    ("district", "District"),
    ("state", "State"),
    ("county", "County"),
    ("postcode", "Postcode"),
    ("country", "Country"),
]
CUSTOM_COLUMNS = [
    ("loyaltytier", "Loyalty Tier"),
    ("preferredstore", "Preferred Store"),
    ("referralcode", "Referral Code"),  # mapped, but the sandbox does not configure it
]
REF_COLUMN = "Account Reference"

HEADER = (
    [REF_COLUMN, "Owner"]
    + [h for _, h in FIELD_COLUMNS]
    + [h for _, h in ADDRESS_COLUMNS]
    + [h for _, h in CUSTOM_COLUMNS]
    + ["Last Modified"]
)

DATE_FORMATS = ["%Y-%m-%d", "%d/%m/%Y", "%d.%m.%Y"]
SANDBOX_CUSTOM_PARAMETERS = ["loyaltytier", "preferredstore"]

# --------------------------------------------------------------------------------------------
# Pools for the clean bulk rows.
# --------------------------------------------------------------------------------------------

FIRST_NAMES = [  # (as written, ascii for the e-mail address)
    ("José", "jose"), ("Zoë", "zoe"), ("Łukasz", "lukasz"), ("Søren", "soren"),
    ("太郎", "taro"), ("Ngọc", "ngoc"), ("Amelia", "amelia"), ("Oliver", "oliver"),
    ("Priya", "priya"), ("Mohammed", "mohammed"), ("Siobhán", "siobhan"),
    ("François", "francois"), ("Chloé", "chloe"), ("Björn", "bjorn"), ("Aoife", "aoife"),
    ("Emma", "emma"), ("Liam", "liam"), ("Noah", "noah"), ("Olivia", "olivia"),
    ("Isla", "isla"), ("Harry", "harry"), ("Grace", "grace"), ("Jack", "jack"),
    ("Freya", "freya"), ("Arjun", "arjun"), ("Fatima", "fatima"), ("Mateusz", "mateusz"),
    ("Inês", "ines"), ("Kofi", "kofi"), ("Hannah", "hannah"), ("Dmitri", "dmitri"),
    ("Anaïs", "anais"), ("Ole", "ole"), ("Mei", "mei"), ("Thomas", "thomas"),
]
LAST_NAMES = [
    ("García", "garcia"), ("Müller", "muller"), ("Kowalski", "kowalski"),
    ("Nørgaard", "norgaard"), ("山田", "yamada"), ("Nguyễn", "nguyen"), ("Smith", "smith"),
    ("Jones", "jones"), ("O'Brien", "obrien"), ("Patel", "patel"), ("Williams", "williams"),
    ("Brown", "brown"), ("Taylor", "taylor"), ("Davies", "davies"), ("Evans", "evans"),
    ("Wilson", "wilson"), ("Roberts", "roberts"), ("Khan", "khan"), ("Lewis", "lewis"),
    ("Walker", "walker"), ("Wright", "wright"), ("Dubois", "dubois"),
    ("Lindqvist", "lindqvist"), ("Wiśniewski", "wisniewski"), ("Fernández", "fernandez"),
    ("Ó Súilleabháin", "osuilleabhain"), ("Okafor", "okafor"), ("Tanaka", "tanaka"),
    ("Hughes", "hughes"), ("Edwards", "edwards"), ("Green", "green"), ("Hall", "hall"),
    ("Murphy", "murphy"), ("van der Berg", "vanderberg"),
]
DOMAINS = ["example.com", "example.org", "example.net", "mail.example.co.uk"]
SALUTATIONS = ["Mr", "Mrs", "Ms", "Miss", "Dr", "Mx"]
OWNERS = ["j.hartley", "a.okoye", "s.lindqvist", "crm-import", "m.tanaka"]
UK_PLACES = [  # (town/city, district or "", county or "", postcode prefix)
    ("London", "Camden", "", "NW1"), ("London", "Hackney", "", "E8"),
    ("London", "", "", "SE1"), ("Manchester", "Didsbury", "Greater Manchester", "M20"),
    ("Leeds", "Headingley", "West Yorkshire", "LS6"), ("Bristol", "", "", "BS8"),
    ("Cardiff", "Canton", "", "CF11"), ("Edinburgh", "Leith", "", "EH6"),
    ("York", "", "North Yorkshire", "YO1"), ("Norwich", "", "Norfolk", "NR2"),
    ("Bath", "", "Somerset", "BA1"), ("Truro", "", "Cornwall", "TR1"),
]
UK_STREETS = [
    "High Street", "Church Lane", "Station Road", "Victoria Road", "Park Avenue",
    "Mill Lane", "Queen's Road", "The Crescent", "Kingsway", "Elm Grove", "Albert Street",
]
HOUSE_NAMES = ["Rose Cottage", "Ivy House", "The Old Forge", "Orchard View", "Flat 4B"]
ABROAD = [  # (street, towncity, district, state, postcode, country)
    ("Calle de Alcalá", "Madrid", "Salamanca", "Comunidad de Madrid", "28009", "Spain"),
    ("Nørrebrogade", "København", "Nørrebro", "", "2200", "Denmark"),
    ("ul. Marszałkowska", "Warszawa", "Śródmieście", "mazowieckie", "00-624", "Poland"),
    ("丸の内1丁目", "東京", "千代田区", "東京都", "100-0005", "Japan"),
    ("Phố Huế", "Hà Nội", "Hai Bà Trưng", "", "100000", "Vietnam"),
    ("Rue de Rivoli", "Paris", "", "", "75001", "France"),
    ("Main Street", "Springfield", "", "IL", "62701", "United States"),
]
TIERS = ["Bronze", "Silver", "Gold", "Platinum"]
STORES = ["London Oxford Street", "Manchester Arndale", "Leeds, Trinity", "Bristol Cabot Circus",
          "Online"]
BOOL_SPELLINGS = {True: ["true", "TRUE", "True", "yes", "Yes", "Y", "y", "1"],
                  False: ["false", "FALSE", "False", "no", "No", "N", "n", "0"]}


def phone_variant(rng, last4):
    """The same UK drama-range landline written the ways CRM users type it."""
    return rng.choice([
        f"+44 20 7946 {last4}",
        f"(020) 7946-{last4}",
        f"020.7946.{last4}",
        f"020 7946 {last4}",
        f"0207946{last4}",
    ])


def mobile_variant(rng, last3):
    return rng.choice([
        f"+44 7700 900{last3}",
        f"07700 900{last3}",
        f"07700-900-{last3}",
        f"(07700) 900{last3}",
    ])


def date_variant(rng, d):
    return d.strftime(rng.choice(DATE_FORMATS))


def email_variant(rng, local, domain):
    r = rng.random()
    if r < 0.12:  # Title-cased by the CRM user
        local = ".".join(p[:1].upper() + p[1:] for p in local.split("."))
        domain = domain[:1].upper() + domain[1:]
    elif r < 0.17:  # caps lock
        local, domain = local.upper(), domain.upper()
    e = f"{local}@{domain}"
    r = rng.random()
    if r < 0.06:
        e = "  " + e
    elif r < 0.12:
        e = e + " "
    return e


def clean_row(rng, n):
    """A random clean row for account number n (ACC-{n})."""
    first, first_a = rng.choice(FIRST_NAMES)
    last, last_a = rng.choice(LAST_NAMES)
    row = {h: "" for h in HEADER}
    row[REF_COLUMN] = f"ACC-{n}"
    row["Owner"] = rng.choice(OWNERS)
    r = rng.random()
    if r < 0.05:
        row["Status"] = ""
    else:
        status = rng.choices(["active", "inactive", "suspended", "closed"], [80, 10, 5, 5])[0]
        row["Status"] = rng.choice([status, status.capitalize(), status.upper()])
    if rng.random() < 0.9:
        row["Verified"] = rng.choice(BOOL_SPELLINGS[rng.random() < 0.7])
    row["Email"] = email_variant(rng, f"{first_a}.{last_a}{n - 10000}", rng.choice(DOMAINS))
    if rng.random() < 0.85:
        row["Salutation"] = rng.choice(SALUTATIONS)
    row["First Name"] = first
    row["Last Name"] = last
    if rng.random() < 0.75:
        row["Phone"] = phone_variant(rng, f"{rng.randrange(1000):04d}")
    if rng.random() < 0.8:
        row["Mobile"] = mobile_variant(rng, f"{rng.randrange(1000):03d}")
    if rng.random() < 0.9:
        d = datetime.date(1940, 1, 1) + datetime.timedelta(days=rng.randrange(24000))
        row["Date of Birth"] = date_variant(rng, d)
    if rng.random() < 0.8:
        row["Gender"] = rng.choice(["Male", "male", "MALE", "Female", "female", "notknown",
                                    "NotKnown"])
    if rng.random() < 0.9:
        row["Marketing Opt-In"] = rng.choice(BOOL_SPELLINGS[rng.random() < 0.5])
    r = rng.random()
    if r < 0.03:
        pass  # no address at all: the body carries no "addresses"
    elif r < 0.75:
        town, district, county, pc = rng.choice(UK_PLACES)
        if rng.random() < 0.15:
            row["House Name"] = rng.choice(HOUSE_NAMES)
        if rng.random() < 0.9:
            row["House Number"] = str(rng.randrange(1, 240))
        row["Street"] = rng.choice(UK_STREETS)
        row["City"] = town
        if district and rng.random() < 0.6:
            row["District"] = district
        row["County"] = county
        row["Postcode"] = f"{pc} {rng.randrange(1, 10)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}" \
                          f"{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"
        row["Country"] = rng.choice(["United Kingdom", "United Kingdom", "UK", "GB"])
    else:
        street, town, district, state, pc, country = rng.choice(ABROAD)
        row["House Number"] = str(rng.randrange(1, 120))
        row["Street"] = street
        row["City"] = town
        row["District"] = district
        row["State"] = state
        row["Postcode"] = pc
        row["Country"] = country
    if rng.random() < 0.85:
        row["Loyalty Tier"] = rng.choice(TIERS)
    if rng.random() < 0.5:
        row["Preferred Store"] = rng.choice(STORES)
    row["Last Modified"] = (f"2026-11-{rng.randrange(1, 31):02d} "
                            f"{rng.randrange(8, 19):02d}:{rng.randrange(60):02d}:"
                            f"{rng.randrange(60):02d}")
    return row


# --------------------------------------------------------------------------------------------
# The intended special rows of night 1. Key = 0-based data-row index; a row's reference is
# ACC-{10001 + index} unless the overrides change it. Every override is applied on top of a
# random clean row. "kind" drives the sandbox accounts file and the README:
#   clean       edge case that must still go through (documented, not a defect)
#   invalid     fails the local rules, never sent
#   duplicate   reference on more than one row of the file
#   not_found   account absent from sandbox-accounts.csv  -> 404
#   conflict    e-mail belongs to another sandbox account -> 409
#   forbidden   locked sandbox account + Client User ID   -> 403
#   not_configured  Referral Code filled, not configured in the sandbox -> 400
#   malformed   ragged row / invalid UTF-8
#   night2      pinned so that night 2 can change it (clean on night 1)
# --------------------------------------------------------------------------------------------

LONG_FIRST = "Maria Fernanda Guadalupe de los Ángeles Concepción Rodríguez"  # 60 chars
LONG_LAST = "Montgomery-Fitzwilliam-Featherstonehaugh-Cholmondeley-Smythe"  # 60 chars
# exactly 50 characters but 58 bytes in UTF-8: within the limit (lengths count characters)
LAST_50 = "Żółkiewska-Śliwińska-Wiśniewska-Grzegorzewska-Łęga"
LONG_TIER = ("Gold (upgrade requested by customer after complaint 55123, see ticket history "
             "for details) -- pending")  # 101 chars
LONG_CLIENTUSERID = "sso|azure-ad|b7f3c9e2-4d1a-4e8b-9c6f-2a5d8e1f0b3c|legacy"  # 56 chars
assert (len(LONG_FIRST), len(LONG_LAST), len(LAST_50), len(LAST_50.encode()), len(LONG_TIER),
        len(LONG_CLIENTUSERID)) == (60, 60, 50, 58, 101, 56)

SPECIAL = {
    # --- showcase of unicode names in the first rows (clean) --------------------------------
    0: ("clean", {"First Name": "José", "Last Name": "García", "Email": "  Jose.Garcia1@Example.COM ",
                  "Phone": "+44 20 7946 0958", "Date of Birth": "1984-07-14"}, "José García"),
    1: ("clean", {"First Name": "Zoë", "Last Name": "Smith", "Email": "zoe.smith2@example.org",
                  "Phone": "(020) 7946-0958", "Date of Birth": "03/11/1991"}, "Zoë Smith"),
    2: ("clean", {"First Name": "Łukasz", "Last Name": "Kowalski", "Email": "LUKASZ.KOWALSKI3@EXAMPLE.NET",
                  "Phone": "020.7946.0958", "Date of Birth": "22.05.1979"}, "Łukasz Kowalski"),
    3: ("clean", {"First Name": "Søren", "Last Name": "Nørgaard", "Email": "soren.norgaard4@example.com"},
        "Søren Nørgaard"),
    4: ("clean", {"First Name": "太郎", "Last Name": "山田", "Email": "taro.yamada5@example.com"},
        "山田 太郎"),
    5: ("clean", {"First Name": "Ngọc", "Last Name": "Nguyễn", "Email": "ngoc.nguyen6@example.com"},
        "Nguyễn Ngọc"),
    # --- edge cases that are valid ------------------------------------------------------------
    14: ("clean", {"House Name": 'The "Old" Rectory', "House Number": "", "Street": "Church Lane",
                   "City": "Bath", "District": "", "State": "", "County": "Somerset",
                   "Postcode": "BA1 2AB", "Country": "United Kingdom"},
         'house name with embedded double quotes (written as "" in the CSV)'),
    20: ("clean", {"House Name": "", "House Number": "", "Street": "Flat 2\nHigh Street",
                   "City": "Leeds", "District": "Headingley", "State": "", "County": "West Yorkshire",
                   "Postcode": "LS6 2AB", "Country": "United Kingdom"},
         "quoted multi-line Street: the next record starts one physical line further down"),
    26: ("clean", {"Last Name": LAST_50}, "last name of exactly 50 characters (58 bytes): accepted"),
    48: ("clean", {"Phone": "+44 20 7946 0958 1234 56"},
         "phone normalizes to exactly 20 digits (0044...): accepted"),
    74: ("clean", {"First Name": "\u00a0Grace\u00a0", "Last Name": "Hall", "Salutation": "   ", "Email": "\tgrace.hall75@example.com"},
         "no-break spaces / tab around values and a whitespace-only Salutation (= empty, not sent)"),
    160: ("clean", {"House Name": "", "House Number": "", "Street": "Flat 14\nHarbour View Road",
                    "City": "Truro", "District": "", "State": "", "County": "Cornwall", "Postcode": "TR1 3XY",
                    "Country": "United Kingdom"},
          "quoted multi-line Street (second one)"),
    # --- locally invalid: category invalid, never sent ----------------------------------------
    7: ("invalid", {"Email": "no-at-sign.example.com"}, "email without @"),
    23: ("invalid", {"Email": "two@@example.com"}, "email with two @"),
    35: ("invalid", {"Email": "john smith@example.com"}, "email with a space"),
    52: ("invalid", {"Email": "@example.com"}, "email with an empty local part"),
    17: ("invalid", {"Status": "pending"}, "status pending (not in [validation].statuses)"),
    44: ("invalid", {"First Name": LONG_FIRST}, "first name of 60 characters"),
    61: ("invalid", {"Last Name": LONG_LAST}, "last name of 60 characters (message says surname)"),
    29: ("invalid", {"Phone": "020 7946 0958 x204"}, "phone with an extension: non numeric"),
    70: ("invalid", {"Phone": "+44 20 7946 0958 1234 5678 901"}, "phone of 25 digits after normalization"),
    82: ("invalid", {"Mobile": "07700 9OO123"}, "mobile with letters O instead of zeros"),
    95: ("invalid", {"Date of Birth": "2099-01-01"}, "date of birth in the future"),
    101: ("invalid", {"Date of Birth": "31/02/1990"}, "date of birth 31 February: matches no format"),
    108: ("invalid", {"Gender": "unknown"}, "gender unknown (fixed on night 2: Female)"),
    116: ("invalid", {"Marketing Opt-In": "maybe"}, "Marketing Opt-In maybe"),
    121: ("invalid", {REF_COLUMN: ".."}, "reference .."),
    130: ("invalid", {REF_COLUMN: ""}, "empty reference"),
    165: ("invalid", {REF_COLUMN: "   "}, "whitespace-only reference (empty after trimming)"),
    138: ("invalid", {"Loyalty Tier": LONG_TIER}, "loyalty tier of 101 characters"),
    147: ("invalid", {"Phone": "020 7946 0958 ext 1234567890123", "Verified": "perhaps"},
          "three errors on one row: phone non numeric AND too long (27 chars), verified perhaps"),
    155: ("invalid", {"Client User ID": LONG_CLIENTUSERID}, "client user id of 56 characters"),
    # --- duplicates: every row of the reference is reported, none is sent --------------------
    39: ("duplicate", {}, "ACC-10040, first of two rows (the pair is resolved on night 2)"),
    180: ("duplicate", {REF_COLUMN: "ACC-10040"}, "ACC-10040, second row (removed on night 2)"),
    89: ("duplicate", {}, "ACC-10090, first of three rows"),
    150: ("duplicate", {REF_COLUMN: " ACC-10090 "}, "ACC-10090 padded with spaces: same reference after trimming"),
    260: ("duplicate", {REF_COLUMN: "ACC-10090", "Email": "not-an-email"},
          "ACC-10090 third row, also a bad email: reported as duplicate only"),
    # --- rejected by the sandbox -------------------------------------------------------------
    57: ("not_found", {}, "account absent from the sandbox"),
    143: ("not_found", {}, "account absent from the sandbox"),
    222: ("not_found", {}, "account absent from the sandbox"),
    66: ("conflict", {"First Name": "Kofi", "Last Name": "Murphy", "Email": " Shared.Inbox@Example.com"},
         "e-mail of ACC-HOLDER-1 (fixed on night 2 with a unique address)"),
    201: ("conflict", {"Email": "FAMILY.ACCOUNT@EXAMPLE.ORG"}, "e-mail of ACC-HOLDER-2"),
    111: ("forbidden", {"Client User ID": "sso-7f3a9c21"}, "locked account, Client User ID filled"),
    244: ("forbidden", {"Client User ID": "SSO|okta|00u1x2y3z4"}, "locked account, Client User ID filled"),
    77: ("not_configured", {"Referral Code": "REF-2026-XK41"}, "Referral Code filled"),
    190: ("not_configured", {"Referral Code": "FRIEND-0093"}, "Referral Code filled"),
    # --- malformed ------------------------------------------------------------------------------
    133: ("malformed", {"__truncate__": 12}, "ragged row: 12 fields instead of 27"),
    288: ("malformed", {"Last Name": b"M\xfcller"}, "Last Name in Latin-1 (byte 0xFC): invalid UTF-8"),
    # --- pinned clean rows that night 2 edits -----------------------------------------------------
    11: ("night2", {"First Name": "Oliver", "Last Name": "Hughes", "Email": "oliver.hughes12@example.com"},
         "night 2: e-mail changes"),
    32: ("night2", {"Phone": "020 7946 0311", "Mobile": "07700 900311"},
         "night 2: phone and mobile change"),
    104: ("night2", {"Loyalty Tier": "Silver"}, "night 2: loyalty tier Silver -> Gold"),
    126: ("night2", {"House Name": "", "House Number": "27", "Street": "High Road", "City": "London",
                     "District": "Leyton", "State": "", "County": "", "Postcode": "E10 5QX",
                     "Country": "United Kingdom"},
          "night 2: street only (the whole home address is sent)"),
    169: ("night2", {"Marketing Opt-In": "Yes"}, "night 2: marketing flag yes -> no"),
    229: ("night2", {"First Name": "Emma", "Last Name": "Taylor", "Email": "emma.taylor230@example.net"},
          "night 2: last name and e-mail change"),
    249: ("night2", {"First Name": "Amelia", "Last Name": "Roberts", "Email": "amelia.roberts250@example.com",
                     "Marketing Opt-In": "yes"},
          "night 2: e-mail re-cased/padded and yes -> Y: same values, unchanged"),
    274: ("night2", {"Phone": "020 7946 0275"}, "night 2: Phone cell emptied: no change, unchanged"),
    299: ("night2", {}, "night 2: row removed from the export"),
}

# Night 2 = night 1 with these edits (keyed by night-1 index). Changed rows also get a new
# "Last Modified", as a CRM would.
NIGHT2_EDITS = {
    11: {"Email": "Oliver.Hughes@Example.net"},
    32: {"Phone": "+44 20 7946 0999", "Mobile": "07700 900999"},
    104: {"Loyalty Tier": "Gold"},
    126: {"Street": "Station Road"},
    169: {"Marketing Opt-In": "no"},
    229: {"Last Name": "Taylor-Okafor", "Email": "emma.taylor-okafor@example.net"},
    249: {"Email": "  AMELIA.ROBERTS250@EXAMPLE.COM ", "Marketing Opt-In": "Y"},
    274: {"Phone": ""},
    66: {"Email": "kofi.murphy67@example.com"},  # conflict fixed: a unique e-mail
    108: {"Gender": "Female"},  # locally invalid row fixed
}
NIGHT2_REMOVED = [180, 299]  # the second ACC-10040 row (duplicate resolved), a clean row
NIGHT2_NEW_ROW = {  # appended; exists in the sandbox accounts file
    REF_COLUMN: "ACC-10321", "Owner": "a.okoye", "Status": "Active", "Verified": "no",
    "Email": "Ngoc.Anh.Nguyen@Example.com", "Salutation": "Ms", "First Name": "Ngọc Anh",
    "Last Name": "Nguyễn", "Phone": "", "Mobile": "+44 7700 900321", "Date of Birth": "09.09.1996",
    "Gender": "female", "Marketing Opt-In": "1", "House Number": "12", "Street": "Phố Huế",
    "City": "Hà Nội", "District": "Hai Bà Trưng", "Postcode": "100000", "Country": "Vietnam",
    "Loyalty Tier": "Bronze", "Preferred Store": "Online", "Last Modified": "2026-12-02 16:05:44",
}
HOLDERS = [("ACC-HOLDER-1", "shared.inbox@example.com"),
           ("ACC-HOLDER-2", "family.account@example.org")]


def build_rows():
    rng = random.Random(SEED)
    rows = [clean_row(rng, 10001 + i) for i in range(N_ROWS)]
    # the Client User ID on 18 clean rows (plus the 2 forbidden rows = 20)
    bulk = [i for i in range(N_ROWS) if i not in SPECIAL]
    for i in sorted(rng.sample(bulk, 18)):
        rows[i]["Client User ID"] = rng.choice(["sso-", "SSO-", "cu_"]) + f"{rng.getrandbits(32):08x}"
    for i, (_kind, overrides, _note) in SPECIAL.items():
        for k, v in overrides.items():
            if k != "__truncate__":
                rows[i][k] = v
    night1 = [(i, rows[i]) for i in range(N_ROWS)]
    night2 = []
    for i, row in night1:
        if i in NIGHT2_REMOVED:
            continue
        if i in NIGHT2_EDITS:
            row = dict(row, **NIGHT2_EDITS[i])
            row["Last Modified"] = f"2026-12-02 {9 + i % 9:02d}:{i % 60:02d}:17"
        night2.append((i, row))
    new = {h: "" for h in HEADER}
    new.update(NIGHT2_NEW_ROW)
    night2.append((None, new))
    return night1, night2


def encode_cell(v):
    b = v if isinstance(v, bytes) else v.encode("utf-8")
    if any(c in b for c in (b",", b'"', b"\n", b"\r")):
        b = b'"' + b.replace(b'"', b'""') + b'"'
    return b


def write_export(path, rows, eol, bom):
    out = bytearray(b"\xef\xbb\xbf" if bom else b"")
    out += b",".join(b'"' + h.encode() + b'"' for h in HEADER) + eol
    for i, row in rows:
        cells = [row[h] for h in HEADER]
        trunc = SPECIAL.get(i, (None, {}, None))[1].get("__truncate__") if i is not None else None
        if trunc:
            cells = cells[:trunc]
        out += b",".join(encode_cell(c) for c in cells) + eol
    with open(path, "wb") as f:
        f.write(out)


def write_sandbox_accounts(path, night1, night2):
    """Every account referenced by a (valid) export row, minus the not_found ones, plus the
    holders of the conflicting e-mails. E-mails are legacy addresses nobody exports."""
    absent = {rows_ref(night1, i) for i, (k, _o, _n) in SPECIAL.items() if k == "not_found"}
    locked = {rows_ref(night1, i) for i, (k, _o, _n) in SPECIAL.items() if k == "forbidden"}
    refs = []
    for _i, row in night1 + night2:
        ref = row[REF_COLUMN].strip()
        if ref and ref not in ("..", ".") and ref not in absent and ref not in refs:
            refs.append(ref)
    lines = ["accountreference,email,locked"]
    for ref in refs:
        lines.append(f"{ref},{ref.lower()}@legacy-crm.example.com,{'true' if ref in locked else 'false'}")
    for ref, email in HOLDERS:
        lines.append(f"{ref},{email},false")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\n".join(lines) + "\n")


def rows_ref(rows, index):
    for i, row in rows:
        if i == index:
            return row[REF_COLUMN].strip()
    raise KeyError(index)


# ============================================================================================
# THE ORACLE. Everything below reads the written files back and applies the contract.
# ============================================================================================

STATUSES = ["active", "inactive", "suspended", "closed"]
GENDERS = ["male", "female", "notknown"]
MAX_LEN = {"clientuserid": 50, "firstname": 50, "lastname": 50, "phonenumber": 20,
           "mobilenumber": 20, "customparameter": 100}
BOOLS = {"true": True, "yes": True, "y": True, "1": True,
         "false": False, "no": False, "n": False, "0": False}
TODAY = datetime.datetime.now(datetime.timezone.utc).date()


def parse_export(path):
    """-> (header, [(start_line, fields)]). Fields are str; invalid UTF-8 bytes survive as
    surrogate escapes so that the validator can spot them per column."""
    with open(path, "rb") as f:
        data = f.read()
    text = data.decode("utf-8", "surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    physical = [l + "\n" for l in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    reader = csv.reader(iter(physical))
    header = next(reader)
    records, prev = [], reader.line_num
    for fields in reader:
        records.append((prev + 1, fields))
        prev = reader.line_num
    return header, records


def has_bad_utf8(s):
    return any("\udc80" <= c <= "\udcff" for c in s)


def valid_email(e):
    if e.count("@") != 1 or any(c.isspace() for c in e):
        return False
    local, domain = e.split("@")
    return bool(local) and bool(domain) and "." in domain[1:-1]


def norm_phone(raw, label, errors, field):
    s = raw
    # Spaces of any width (Unicode Zs, e.g. a no-break space) count as spaces.
    for c in " -.()\u00a0\u1680\u202f\u205f\u3000" + "".join(map(chr, range(0x2000, 0x200B))):
        s = s.replace(c, "")
    if s.startswith("+"):
        s = "00" + s[1:]
    if any(c not in "0123456789" for c in s):
        errors.append((field, f"{label} does not support non numeric characters"))
    if len(s) > MAX_LEN[field]:
        errors.append((field, f"{label} provided exceeds maximum length"))
    return s


def parse_date(s):
    for fmt in DATE_FORMATS:
        try:
            d = datetime.datetime.strptime(s, fmt).date()
            if d.year >= 1000:  # a four-digit year, as accountsync requires
                return d
        except ValueError:
            pass
    return None


def ref_valid(ref):
    return ref not in ("", ".", "..") and not any(unicodedata.category(c) == "Cc" for c in ref)


def evaluate(header, fields):
    """One record -> dict(kind, ref, errors=[(field, message)], values). kind is malformed,
    invalid or ok (duplicates are decided afterwards, from the refs of every row, malformed
    ones included: a ragged row still names its account)."""
    col = {h: i for i, h in enumerate(header)}
    ref_raw = fields[col[REF_COLUMN]] if col[REF_COLUMN] < len(fields) else None
    ref = ref_raw.strip() if ref_raw is not None and not has_bad_utf8(ref_raw) else ""
    if len(fields) != len(header):
        return dict(kind="malformed", ref=ref,
                    errors=[("", f"row has {len(fields)} fields but the header has {len(header)}")])
    mapped = ([(REF_COLUMN, "accountreference")] + [(h, f) for f, h in FIELD_COLUMNS]
              + [(h, f"addresses.home.{f}") for f, h in ADDRESS_COLUMNS]
              + [(h, f"customparameters.{f}") for f, h in CUSTOM_COLUMNS])
    bad = [(path, f'column "{h}" is not valid UTF-8') for h, path in mapped if has_bad_utf8(fields[col[h]])]
    if bad:
        return dict(kind="malformed", ref=ref, errors=bad)

    errors, values, home, custom = [], {}, {}, {}
    if not ref_valid(ref):
        errors.append(("accountreference", "accountreference is invalid"))
    for f, h in FIELD_COLUMNS:
        v = fields[col[h]].strip()
        if not v:
            continue
        if f == "email":
            v = v.lower()
            if not valid_email(v):
                errors.append((f, "email address format invalid"))
        elif f == "status":
            v = v.lower()
            if v not in STATUSES:
                errors.append((f, "invalid status provided"))
        elif f == "gender":
            v = v.lower()
            if v not in GENDERS:
                errors.append((f, "invalid gender provided"))
        elif f in ("verified", "marketingallowed"):
            if v.lower() in BOOLS:
                v = BOOLS[v.lower()]
            else:
                errors.append((f, f"{f} is not a valid boolean"))
        elif f == "phonenumber":
            v = norm_phone(v, "phone number", errors, f)
        elif f == "mobilenumber":
            v = norm_phone(v, "mobile number", errors, f)
        elif f == "dateofbirth":
            d = parse_date(v)
            if d is None:
                errors.append((f, "dateofbirth is not a valid date"))
            else:
                v = d.isoformat()
                if not d < TODAY:
                    errors.append((f, "dateofbirth must be a date in the past"))
        elif f in ("clientuserid", "firstname", "lastname"):
            if len(v) > MAX_LEN[f]:
                name = "surname" if f == "lastname" else f
                errors.append((f, f"{name} provided exceeds maximum length"))
        values[f] = v
    for f, h in ADDRESS_COLUMNS:
        v = fields[col[h]].strip()
        if v:
            home[f] = v
    for f, h in CUSTOM_COLUMNS:
        v = fields[col[h]].strip()
        if v:
            if len(v) > MAX_LEN["customparameter"]:
                errors.append((f"customparameters.{f}", f"{f} provided exceeds maximum length"))
            custom[f] = v
    return dict(kind="invalid" if errors else "ok", ref=ref, errors=errors,
                values=values, home=home, custom=custom)


class Sandbox:
    """The accountsync-sandbox rules, in order: 404, 400, 403, 409, else 200 + apply."""

    def __init__(self, path):
        self.accounts, self.owner = {}, {}
        with open(path, encoding="utf-8", newline="") as f:
            for r in csv.DictReader(f):
                self.accounts[r["accountreference"]] = dict(email=r["email"], locked=r["locked"] == "true")
                assert r["email"] not in self.owner, r
                self.owner[r["email"]] = r["accountreference"]

    def patch(self, ref, body):
        if ref not in self.accounts:
            return 404, ["account not found"]
        msgs = [f"{n} not configured" for n in body.get("customparameters", {})
                if n not in SANDBOX_CUSTOM_PARAMETERS]
        if msgs:
            return 400, msgs
        acct = self.accounts[ref]
        if acct["locked"] and "clientuserid" in body:
            return 403, ["unable to manage clientuserid with the provided authentication"]
        email = body.get("email")
        if email is not None and self.owner.get(email, ref) != ref:
            return 409, ["the email is already in use"]
        if email is not None:
            self.owner.pop(acct["email"], None)
            acct["email"] = email
            self.owner[email] = ref
        return 200, []


def api_error(status, message):
    """-> (category, field) for an API rejection message."""
    if status == 404:
        return "not_found", ""
    if status == 403:
        return "forbidden", "clientuserid"
    if status == 409:
        return "conflict", "email"
    if message.endswith(" not configured"):
        return "not_configured", "customparameters." + message[: -len(" not configured")]
    assert status == 400, (status, message)
    return "invalid", ""  # not produced by these samples: every sent body passes local rules


def diff(rec, confirmed):
    """-> body with the fields that differ from the confirmed values; new confirmed values."""
    body = {}
    c_fields = confirmed.get("fields", {})
    for f, _h in FIELD_COLUMNS:
        if f in rec["values"] and rec["values"][f] != c_fields.get(f):
            body[f] = rec["values"][f]
    c_home = confirmed.get("home", {})
    home = dict(c_home, **rec["home"])
    if home and home != c_home:
        body["addresses"] = [dict({"addresstype": "home"}, **home)]
    c_custom = confirmed.get("custom", {})
    changed = {n: v for n, v in rec["custom"].items() if v != c_custom.get(n)}
    if changed:
        body["customparameters"] = changed
    new_confirmed = {"fields": dict(c_fields, **{f: v for f, v in body.items()
                                                 if f not in ("addresses", "customparameters")}),
                     "home": home, "custom": dict(c_custom, **changed)}
    return body, new_confirmed


def run_night(path, sandbox, cache, remembered):
    """One `accountsync run FILE`. Mutates sandbox, cache and remembered like the product."""
    name = os.path.basename(path)
    header, records = parse_export(path)
    evaluated = [(line, fields, evaluate(header, fields)) for line, fields in records]
    lines_of = {}
    for line, _f, ev in evaluated:
        if ref_valid(ev["ref"]):
            lines_of.setdefault(ev["ref"], []).append(line)
    errors, bodies = [], {}
    summary = {"rows_read": len(records), "unchanged": 0, "updated": 0, "rejected": 0, "failed": 0}

    def err(line, ref, category, status, field, message):
        errors.append([name, line, ref, category, "" if status is None else status, field, message])

    for line, fields, ev in evaluated:
        ref = ev["ref"]
        duplicated = ref_valid(ref) and len(lines_of[ref]) > 1
        if duplicated:
            where = ", ".join(str(l) for l in lines_of[ref])
            err(line, ref, "duplicate", None, "accountreference",
                f"accountreference is on more than one row of this file (lines {where}); "
                "none of them was sent")
        if ev["kind"] == "malformed":
            # A malformed duplicate says both; a well-formed one only that it is a duplicate.
            for field, msg in ev["errors"]:
                err(line, ref, "malformed", None, field, msg)
            summary["rejected"] += 1
            continue
        if duplicated:
            summary["rejected"] += 1
            continue
        if ev["kind"] == "invalid":
            for field, msg in ev["errors"]:
                err(line, ref, "invalid", None, field, msg)
            summary["rejected"] += 1
            continue
        prior = remembered.get(ref)
        if prior is not None and prior["fields"] == fields:
            for category, status, field, msg in prior["errors"]:
                err(line, ref, category, status, field, msg)
            summary["rejected"] += 1
            continue
        body, new_confirmed = diff(ev, cache.get(ref, {}))
        if not body:
            summary["unchanged"] += 1
            continue
        assert ref not in bodies, ref
        bodies[ref] = body
        status, msgs = sandbox.patch(ref, body)
        if status == 200:
            cache[ref] = new_confirmed
            remembered.pop(ref, None)
            summary["updated"] += 1
        else:
            rows = []
            for msg in msgs:
                category, field = api_error(status, msg)
                rows.append((category, status, field, msg))
                err(line, ref, category, status, field, msg)
            remembered[ref] = {"fields": fields, "errors": rows}
            summary["rejected"] += 1
    errors.sort(key=lambda e: (e[1], e[6]))
    assert summary["rows_read"] == summary["unchanged"] + summary["updated"] + summary["rejected"]
    return header, records, bodies, errors, summary


# --------------------------------------------------------------------------------------------
# Self-checks: physical line numbers recomputed from the raw bytes with a quote-parity scan.
# --------------------------------------------------------------------------------------------

def record_start_lines(path):
    with open(path, "rb") as f:
        data = f.read()
    starts, line, in_quotes, at_record_start = [], 1, False, True
    for b in data:
        if at_record_start:
            starts.append(line)
            at_record_start = False
        if b == 0x22:
            in_quotes = not in_quotes
        elif b == 0x0A:
            line += 1
            if not in_quotes:
                at_record_start = True
    return starts[1:]  # without the header


def check_night(path, records, errors, raw_rows):
    starts = record_start_lines(path)
    assert starts == [l for l, _ in records], path
    assert len(records) == len(raw_rows)
    with open(path, "rb") as f:
        physical = f.read().split(b"\n")
    for e in errors:
        text = physical[e[1] - 1].decode("utf-8", "replace").lstrip("\ufeff")
        if e[2]:
            assert text.split(",")[0].strip() == e[2], (e, text)
        else:
            assert text.split(",")[0].strip() == "", (e, text)
    # the rows parsed back are the rows intended
    for (_l, fields), (i, row) in zip(records, raw_rows):
        want = [row[h] for h in HEADER]
        trunc = SPECIAL.get(i, (None, {}, None))[1].get("__truncate__") if i is not None else None
        if trunc:
            want = want[:trunc]
        got = [f.encode("utf-8", "surrogateescape") if has_bad_utf8(f) else f for f in fields]
        assert got == want, (i, got, want)


# --------------------------------------------------------------------------------------------
# Writers for the expected results, README and configs.
# --------------------------------------------------------------------------------------------

def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


def write_errors(path, errors):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["file", "line", "accountreference", "category", "http_status", "field", "message"])
        w.writerows(errors)


def write_readme(path, night1, night2, lines1, lines2, s1, s2):
    def where(i, lines):
        return str(lines[i]) if i in lines else "—"

    out = [
        "# Sample data",
        "",
        "Generated by `python3 samples/generate.py` (run from the repository root; deterministic).",
        "Do not edit the CSV files by hand: change the tables in `generate.py` and rerun it. The",
        "script also writes `config/demo.toml` and the expected results",
        "in `tests/data/expected/` (computed by an independent Python oracle of CONTRACT.md).",
        "",
        "| file | what |",
        "|---|---|",
        f"| `{NIGHT1_NAME}` | night 1: {len(night1)} data rows, UTF-8 BOM, CRLF line endings |",
        f"| `{NIGHT2_NAME}` | night 2: {len(night2)} data rows, no BOM, LF line endings |",
        "| `sandbox-accounts.csv` | accounts known to `accountsync-sandbox` (`accountreference,email,locked`) |",
        "",
        "Start the sandbox with `--accounts samples/sandbox-accounts.csv --custom-parameters "
        "loyaltytier,preferredstore --token demo-token` and use `config/demo.toml`.",
        "",
        "The exports have 27 columns: the 25 mapped ones plus `Owner` and `Last Modified`, which",
        "are not mapped and must be ignored. Cells carry mixed data on purpose: e-mails in mixed",
        "case with padding, phones as `+44 20 7946 0958` / `(020) 7946-0958` / `020.7946.0958`,",
        "dates as `%Y-%m-%d`, `%d/%m/%Y` and `%d.%m.%Y`, booleans spelled",
        "true/false/yes/no/y/n/1/0 in any case, empty cells (= field not sent). 21 rows fill",
        "Client User ID (18 clean, the 2 forbidden rows, 1 too long); Referral Code is only filled\non the not_configured rows. Inside quoted",
        "multi-line cells the line break is a bare LF in both files (as Excel writes it), so those",
        "values are identical on both nights.",
        "",
        "Sandbox accounts carry legacy e-mails (`{ref}@legacy-crm.example.com`) that no export uses,",
        "except `ACC-HOLDER-1` (`shared.inbox@example.com`) and `ACC-HOLDER-2`",
        "(`family.account@example.org`), which no export row touches and whose e-mails the two",
        "conflict rows try to take.",
        "",
        "## Night 1 special rows",
        "",
        "`line` is the physical line where the record starts (header = line 1).",
        "",
        "| line (night 1) | line (night 2) | reference | kind | what |",
        "|---|---|---|---|---|",
    ]
    for i in sorted(SPECIAL, key=lambda i: (["clean", "invalid", "duplicate", "malformed",
                                              "not_found", "conflict", "forbidden",
                                              "not_configured", "night2"].index(SPECIAL[i][0]), i)):
        kind, _o, note = SPECIAL[i]
        ref = dict(night1)[i][REF_COLUMN]
        shown = f"`{ref}`" if ref.strip() else "(empty)"
        if ref != ref.strip() and ref.strip():
            shown = f"`\"{ref}\"`"
        out.append(f"| {where(i, lines1)} | {where(i, lines2)} | {shown} | {kind} | {note} |")
    out += [
        f"| — | {lines2[None]} | `ACC-10321` | night2 | new account, appended on night 2 |",
        "",
        "Every other row is clean, its account exists in the sandbox and is not locked.",
        "",
        "## Night 2",
        "",
        "Same rows in the same order (content byte-identical, line endings LF), except:",
        "",
        "- changed: ACC-10012 (e-mail), ACC-10033 (phone and mobile), ACC-10105 (loyalty tier),",
        "  ACC-10127 (street only: the whole home address is sent), ACC-10170 (marketing flag),",
        "  ACC-10230 (last name and e-mail);",
        "- cosmetic only, so still `unchanged`: ACC-10250 (e-mail re-cased and padded, `yes` → `Y`),",
        "  ACC-10275 (Phone cell emptied: an empty cell means no change);",
        "- fixed: ACC-10067 (conflict → unique e-mail), ACC-10109 (gender `unknown` → `Female`),",
        "  ACC-10040 (its second row is removed, so the remaining row is sent in full);",
        "- removed: ACC-10300; new: ACC-10321 (last row);",
        "- the other API rejections (404, 409, 403, not configured) are unchanged rows: not",
        "  resent, listed again with their night-1 category, status and messages.",
        "",
        "## Expected results",
        "",
        "`tests/data/expected/nightN-bodies.json` (reference → exact PATCH body),",
        "`nightN-errors.csv` (the `file` column holds the export's basename), `nightN-summary.json`:",
        "",
        "| night | rows_read | unchanged | updated | rejected | failed |",
        "|---|---|---|---|---|---|",
        f"| 1 | {s1['rows_read']} | {s1['unchanged']} | {s1['updated']} | {s1['rejected']} | {s1['failed']} |",
        f"| 2 | {s2['rows_read']} | {s2['unchanged']} | {s2['updated']} | {s2['rejected']} | {s2['failed']} |",
        "",
        "The oracle checks date of birth against today's UTC date; all sample dates are far from it.",
        "",
    ]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out))


def toml_str(s):
    return json.dumps(s, ensure_ascii=False)


def columns_toml():
    out = ["[columns]                          # API field = \"CRM header\"",
           f"accountreference = {toml_str(REF_COLUMN)}"]
    out += [f"{f} = {toml_str(h)}" for f, h in FIELD_COLUMNS]
    out += ["", "[columns.addresses.home]"]
    out += [f"{f} = {toml_str(h)}" for f, h in ADDRESS_COLUMNS]
    out += ["", "[columns.customparameters]        # parameter name = \"CRM header\""]
    out += [f"{f} = {toml_str(h)}" for f, h in CUSTOM_COLUMNS]
    return "\n".join(out)


DEMO_TOML = """\
# accountsync demo: the sample exports in samples/ against the local accountsync-sandbox.
#
# Start the sandbox:
#   accountsync-sandbox --accounts samples/sandbox-accounts.csv \\
#       --custom-parameters loyaltytier,preferredstore --token demo-token
# then:
#   export ACCOUNTSYNC_TOKEN=demo-token
#   accountsync --config config/demo.toml run samples/crm-export-2026-12-02.csv
#   accountsync --config config/demo.toml run samples/crm-export-2026-12-03.csv
#
# Relative paths resolve against this file's directory (config/): everything the demo
# writes lands under target/demo/. Generated by samples/generate.py.

[api]
base_url = "http://127.0.0.1:18080/rest/api"
token_env = "ACCOUNTSYNC_TOKEN"    # the sandbox accepts "demo-token"
timeout_secs = 10

[rate]
requests_per_second = 50
burst = 10
max_in_flight = 8

[retry]
max_attempts = 5
initial_backoff_ms = 200
max_backoff_ms = 5000

[input]
dir = "../target/demo/inbox"       # for `run` without files (and the daemon)
pattern = "crm-export-*.csv"
delimiter = ","
date_formats = ["%Y-%m-%d", "%d/%m/%Y", "%d.%m.%Y"]

# Every API field mapped to the CRM's header. "Owner" and "Last Modified" stay unmapped.
# referralcode is mapped on purpose: the sandbox does not configure it, so those rows
# come back as not_configured.
{columns}

[cache]
path = "../target/demo/cache"

[report]
dir = "../target/demo/reports"

[schedule]
cron = "0 0 2 * * *"               # 02:00:00 every day (sec min hour day month weekday)
"""



def main():
    night1, night2 = build_rows()
    p1 = os.path.join(HERE, NIGHT1_NAME)
    p2 = os.path.join(HERE, NIGHT2_NAME)
    write_export(p1, night1, b"\r\n", bom=True)
    write_export(p2, night2, b"\n", bom=False)
    sandbox_path = os.path.join(HERE, "sandbox-accounts.csv")
    write_sandbox_accounts(sandbox_path, night1, night2)

    # ---- the oracle: two consecutive runs against one sandbox, one cache --------------------
    sandbox, cache, remembered = Sandbox(sandbox_path), {}, {}
    _h1, rec1, bodies1, errors1, s1 = run_night(p1, sandbox, cache, remembered)
    check_night(p1, rec1, errors1, night1)
    _h2, rec2, bodies2, errors2, s2 = run_night(p2, sandbox, cache, remembered)
    check_night(p2, rec2, errors2, night2)

    # ---- the oracle's results are what the tables intended -------------------------------------
    cat1 = {}
    for e in errors1:
        cat1.setdefault(e[1], set()).add(e[3])
    for k, (i, _row) in enumerate(night1):
        kind = SPECIAL.get(i, ("clean",))[0]
        want = {"clean": None, "night2": None}.get(kind, kind)
        got = cat1.get(rec1[k][0])
        assert got == ({want} if want else None), (i, kind, got)
        if want in (None, "not_found", "conflict", "forbidden", "not_configured"):
            assert dict(night1)[i][REF_COLUMN].strip() in bodies1, i
    assert sorted(bodies2) == sorted(["ACC-10012", "ACC-10033", "ACC-10105", "ACC-10127", "ACC-10170",
                                      "ACC-10230", "ACC-10321", "ACC-10067", "ACC-10109", "ACC-10040"])
    assert sum(1 for _i, r in night1 if r["Client User ID"]) == 21  # 18 + 2 forbidden + 1 too long

    exp = os.path.join(ROOT, "tests", "data", "expected")
    os.makedirs(exp, exist_ok=True)
    for n, bodies, errors, summary in ((1, bodies1, errors1, s1), (2, bodies2, errors2, s2)):
        write_json(os.path.join(exp, f"night{n}-bodies.json"), bodies)
        write_errors(os.path.join(exp, f"night{n}-errors.csv"), errors)
        write_json(os.path.join(exp, f"night{n}-summary.json"), summary)

    lines1 = {i: rec1[k][0] for k, (i, _r) in enumerate(night1)}
    lines2 = {i: rec2[k][0] for k, (i, _r) in enumerate(night2)}
    write_readme(os.path.join(HERE, "README.md"), night1, night2, lines1, lines2, s1, s2)

    os.makedirs(os.path.join(ROOT, "config"), exist_ok=True)
    with open(os.path.join(ROOT, "config", "demo.toml"), "w", encoding="utf-8") as f:
        f.write(DEMO_TOML.replace("{columns}", columns_toml()))

    for n, s, b, e in ((1, s1, bodies1, errors1), (2, s2, bodies2, errors2)):
        print(f"night {n}: {s}  bodies={len(b)}  error rows={len(e)}")


if __name__ == "__main__":
    main()
