"""Write data/sample_leads.csv: about 300 plausible B2B leads for the Ledgerline demo.

Deterministic (fixed seed), so re-running it gives the same file byte for byte:

    .venv/bin/python data/make_sample_leads.py

Every address is on a reserved example domain (``*.example``, example.com/.org/.net).
"""

from __future__ import annotations

import csv
import random
import unicodedata
from dataclasses import dataclass
from pathlib import Path

SEED = 20260105
OUT = Path(__file__).with_name("sample_leads.csv")
HEADER = [
    "email",
    "first_name",
    "last_name",
    "company",
    "title",
    "industry",
    "company_size",
    "country",
    "timezone",
    "locale",
    "persona",
    "journey_stage",
    "lifecycle_stage",
    "erp",
    "source",
]
STAGES = (("awareness", 55), ("consideration", 28), ("decision", 17))
SOURCES = (
    ("webinar", 22),
    ("trade_show", 18),
    ("whitepaper", 27),
    ("newsletter", 15),
    ("organic", 18),
)
BLANK_TIMEZONES = 6  # these rows get the configured default zone on import
SMALL_COMPANY = 300
# Small companies rarely have a C-level or VP in IT or procurement.
BIG_COMPANY_TITLES = frozenset(
    {
        "CIO", "Chief Information Officer", "VP of IT", "Head of Enterprise Applications",
        "Director of Business Systems", "Chief Procurement Officer", "VP Procurement",
        "Director of Procurement", "Group Financial Controller", "Finanzvorstand",
        "Head of Business Applications",
    }
)  # fmt: skip
FREE_DOMAINS = ("example.com", "example.org", "example.net")


@dataclass(frozen=True)
class Company:
    name: str
    domain: str
    industry: str
    size: int | None
    erp: str
    timezone: str


@dataclass(frozen=True)
class Region:
    country: str
    locale: str
    count: int
    personas: tuple[tuple[str, int], ...]
    companies: tuple[Company, ...]


def _c(name: str, domain: str, industry: str, size: int | None, erp: str, tz: str) -> Company:
    return Company(name, domain, industry, size, erp, tz)


NY, CHI, LA = "America/New_York", "America/Chicago", "America/Los_Angeles"
LON, BER, SEO, TYO, SYD = (
    "Europe/London",
    "Europe/Berlin",
    "Asia/Seoul",
    "Asia/Tokyo",
    "Australia/Sydney",
)
MIXED = (("finance_leader", 45), ("it_director", 30), ("procurement_manager", 25))

US = (
    _c("Northwind Outfitters", "northwind-outfitters", "retail", 850, "NetSuite", CHI),
    _c("Bluestem Analytics", "bluestem-analytics", "software", 240, "NetSuite", CHI),
    _c("Cedar Ridge Health", "cedarridgehealth", "healthcare", 3400, "SAP", NY),
    _c("Ironclad Fabrication", "ironclad-fab", "manufacturing", 620, "Dynamics 365", CHI),
    _c("Lakeshore Logistics", "lakeshore-logistics", "logistics", 1900, "SAP", CHI),
    _c("Brightpath Learning", "brightpathlearning", "education", 310, "NetSuite", NY),
    _c("Summit Peak Software", "summitpeak", "software", 95, "QuickBooks", LA),
    _c(
        "Granite State Mutual", "granitestatemutual", "financial services", 2600, "Dynamics 365", NY
    ),
    _c("Redwood Clinical Labs", "redwoodclinical", "healthcare", 540, "NetSuite", LA),
    _c("Lighthouse Point Hotels", "lighthousepointhotels", "hospitality", 2400, "Dynamics 365", NY),
    _c("Pinecrest Foods", "pinecrestfoods", "food and beverage", 1300, "SAP", CHI),
    _c("Vantage Point Media", "vantagepointmedia", "media", 180, "QuickBooks", LA),
    _c("Copperline Energy", "copperline-energy", "energy", 7800, "SAP", CHI),
    _c("Foxglove Interiors", "foxglove-interiors", "retail", 45, "QuickBooks", NY),
    _c("Harborview Capital", "harborviewcapital", "financial services", 220, "NetSuite", NY),
    _c("Sterling Ridge Construction", "sterlingridge", "construction", 900, "Dynamics 365", CHI),
    _c("Quillfeather Publishing", "quillfeather", "media", 60, "", NY),
    _c("Atlas Cold Chain", "atlascoldchain", "logistics", 2200, "NetSuite", CHI),
    _c("Meadowbrook Senior Living", "meadowbrook-living", "healthcare", 5200, "Dynamics 365", NY),
    _c("Kestrel Robotics", "kestrelrobotics", "manufacturing", 410, "NetSuite", LA),
    _c("Tidewater Marine Supply", "tidewatermarine", "wholesale", 280, "QuickBooks", NY),
    _c("Bramblewood Apparel", "bramblewood", "retail", 1500, "NetSuite", LA),
    _c("Clearwater Dental Partners", "clearwaterdental", "healthcare", 760, "", NY),
    _c("Sunward Solar", "sunwardsolar", "energy", 330, "NetSuite", LA),
    _c(
        "Driftless Dairy Cooperative",
        "driftlessdairy",
        "food and beverage",
        640,
        "Dynamics 365",
        CHI,
    ),
    _c("Canyon Creek Software", "canyoncreek", "software", 1250, "NetSuite", LA),
    _c(
        "Larkspur Consulting Group",
        "larkspurconsulting",
        "professional services",
        150,
        "QuickBooks",
        NY,
    ),
    _c("Blackridge Industrial", "blackridge-industrial", "manufacturing", 12500, "SAP", CHI),
    _c("Silverline Payments", "silverlinepayments", "financial services", 480, "NetSuite", LA),
    _c("Elmstead Property Management", "elmstead", "real estate", 210, "", NY),
    _c("Westfield Medical Devices", "westfieldmed", "healthcare", 2900, "SAP", NY),
    _c("Prairie Wind Logistics", "prairiewind", "logistics", 130, "QuickBooks", CHI),
    _c("Riverbend Charter Schools", "riverbendschools", "education", 1100, "", CHI),
    _c("Ardent Cloud Systems", "ardentcloud", "software", 3600, "NetSuite", LA),
    _c("Norcastle Engineering", "norcastle", "professional services", 860, "Dynamics 365", NY),
    _c("Paloma Beverage Co.", "palomabeverage", "food and beverage", 370, "NetSuite", LA),
    _c("Stonegate Financial", "stonegatefinancial", "financial services", 9100, "SAP", NY),
    _c("Evergreen Home Health", "evergreenhomehealth", "healthcare", 1750, "", LA),
    _c("Bayside Electronics Distribution", "baysideelectronics", "wholesale", 1050, "SAP", LA),
    _c("Continental Rail Services", "continentalrail", "logistics", 18000, "SAP", CHI),
    _c("Juniper Lane Studio", "juniperlane", "professional services", 14, "QuickBooks", LA),
    _c("Marigold Pet Supply", "marigoldpet", "retail", None, "QuickBooks", CHI),
)
UK = (
    _c("Thamesbridge Logistics", "thamesbridge", "logistics", 1400, "SAP", LON),
    _c("Ashworth Lowe Solicitors", "ashworthlowe", "professional services", 320, "Xero", LON),
    _c("Pennine Manufacturing", "pennine-mfg", "manufacturing", 760, "Dynamics 365", LON),
    _c("Kingsmead Retail Group", "kingsmead", "retail", 5400, "SAP", LON),
    _c("Brackenfield Software", "brackenfield", "software", 140, "Xero", LON),
    _c("Harrowgate Healthcare", "harrowgatehealth", "healthcare", 2100, "Dynamics 365", LON),
    _c("Marlow Digital", "marlowdigital", "media", 55, "Xero", LON),
    _c("Calder Valley Foods", "caldervalleyfoods", "food and beverage", 980, "NetSuite", LON),
    _c("Severn Estuary Energy", "severnenergy", "energy", 3100, "SAP", LON),
    _c("Whitcombe Insurance", "whitcombe", "financial services", 1700, "Dynamics 365", LON),
    _c("Northgate Facilities", "northgatefacilities", "facilities management", 2600, "SAP", LON),
    _c("Larchmont Education Trust", "larchmont-trust", "education", 850, "Xero", LON),
)
DE = (
    _c("Brandauer Maschinenbau GmbH", "brandauer", "manufacturing", 1800, "SAP", BER),
    _c("Nordlicht Logistik GmbH", "nordlicht-logistik", "logistics", 950, "SAP", BER),
    _c("Feldmann Medizintechnik AG", "feldmann-medtech", "healthcare", 2400, "SAP", BER),
    _c("Isarwerk Software GmbH", "isarwerk", "software", 210, "Dynamics 365", BER),
    _c("Rheinhafen Handel GmbH", "rheinhafen", "wholesale", 430, "Dynamics 365", BER),
    _c("Schwarzwald Präzision GmbH", "schwarzwald-praezision", "manufacturing", 670, "SAP", BER),
    _c("Elbtal Versicherung AG", "elbtal-versicherung", "financial services", 3800, "SAP", BER),
    _c("Kranich Mode GmbH", "kranich-mode", "retail", 1100, "NetSuite", BER),
    _c("Sonnenfeld Energie GmbH", "sonnenfeld-energie", "energy", 520, "SAP", BER),
    _c("Lindenhof Kliniken", "lindenhof-kliniken", "healthcare", 6200, "SAP", BER),
)
AU = (
    _c("Southern Cross Freight", "southerncrossfreight", "logistics", 1300, "NetSuite", SYD),
    _c("Wattle Street Software", "wattlestreet", "software", 120, "Xero", SYD),
    _c("Coral Coast Hospitality", "coralcoast", "hospitality", 2100, "Dynamics 365", SYD),
    _c("Bluegum Health", "bluegumhealth", "healthcare", 880, "NetSuite", SYD),
    _c("Ironbark Mining Services", "ironbarkmining", "mining", 4600, "SAP", SYD),
    _c("Harbourline Retail", "harbourline", "retail", 560, "NetSuite", SYD),
)
KR = (
    _c("한빛물류", "hanbit-logistics", "logistics", 1200, "SAP", SEO),
    _c("서한정밀", "seohan-precision", "manufacturing", 2300, "SAP", SEO),
    _c("누리소프트", "nurisoft", "software", 180, "", SEO),
    _c("다온유통", "daon-retail", "retail", 3100, "SAP", SEO),
    _c("세움건설", "seum-construction", "construction", 1500, "", SEO),
    _c("푸른바이오", "pureun-bio", "healthcare", 420, "", SEO),
    _c("한결식품", "hangyeol-foods", "food and beverage", 860, "SAP", SEO),
    _c("미래에너지솔루션", "mirae-energy", "energy", 650, "", SEO),
    _c("가온핀테크", "gaon-fintech", "financial services", 260, "NetSuite", SEO),
    _c("태성전자", "taesung-electronics", "manufacturing", 9800, "SAP", SEO),
)
JP = (
    _c("山手精機株式会社", "yamate-seiki", "manufacturing", 1400, "SAP", TYO),
    _c("株式会社さくら物流", "sakura-butsuryu", "logistics", 2200, "SAP", TYO),
    _c("青葉ソフトウェア株式会社", "aoba-software", "software", 310, "", TYO),
    _c("東邦リテール株式会社", "toho-retail", "retail", 5600, "SAP", TYO),
    _c("株式会社みなと医療サービス", "minato-iryo", "healthcare", 780, "", TYO),
    _c("北斗エネルギー株式会社", "hokuto-energy", "energy", 1900, "SAP", TYO),
)

REGIONS = (
    Region("US", "en", 158, MIXED, US),
    Region("GB", "en-GB", 42, MIXED, UK),
    Region("DE", "de", 30, MIXED, DE),
    Region("AU", "en", 22, MIXED, AU),
    Region(
        "KR",
        "ko",
        30,
        (("finance_leader", 70), ("it_director", 15), ("procurement_manager", 15)),
        KR,
    ),
    Region("JP", "ja", 18, MIXED, JP),
)


def _words(text: str) -> list[str]:
    return text.split()


# (given name, family name) pools; Korean and Japanese carry a romanization for the address.
EN_FIRST = _words(
    """James Maria David Priya Michael Jennifer Robert Aisha Daniel Emily Carlos Sarah Kevin
Laura Marcus Rachel Brian Olivia Thomas Grace Nathan Megan Andre Hannah Samuel Nicole Victor Julia
Ethan Rebecca Omar Chloe Patrick Lauren Raj Sofia Derek Alicia Gregory Vanessa Wei Mei Tyler Monica
Jason Erin Luis Natalie Adrian Fatima Sean Keisha Diego Heather"""
)
EN_LAST = _words(
    """Anderson Patel Nguyen Johnson Garcia Thompson Williams Chen Martinez O'Connor Robinson
Clark Lewis Walker Hall Young King Wright Lopez Hill Scott Green Adams Baker Nelson Carter Mitchell
Perez Roberts Turner Phillips Campbell Parker Evans Collins Stewart Morris Reed Cook Morgan Bell
Murphy Bailey Rivera Cooper Richardson Howard Ward Torres Peterson Gray Ramirez Brooks Kelly Sanders
Bennett Wood Barnes Ross Henderson Coleman Jenkins Hughes Flores Washington Foster Bryant Russell
Diaz Hayes Kim Shah Goldberg Nakamura-Reyes"""
)
UK_FIRST = _words(
    """Oliver Charlotte Harry Amelia George Sophie Jack Emma William Lucy Alistair Fiona Rhys
Niamh Callum Imogen Rupert Harriet Mohammed Zara Tom Priya Graham Siobhan"""
)
UK_LAST = _words(
    """Smith Jones Taylor Brown Davies Evans Wilson Thomas Roberts Johnson Walker Wright Thompson
Hughes Edwards Green Lewis Wood Harris Clarke Ahmed Khan Fletcher Pembroke Hargreaves Whitaker
McAllister Bhatt"""
)
AU_FIRST = _words(
    """Lachlan Chloe Mitchell Sienna Hamish Isla Brodie Matilda Cooper Jess Darcy Aiden Mei
Harrison Ruby"""
)
AU_LAST = _words(
    """Nguyen Smith Kelly Wilson O'Brien Taylor Murray Campbell Tran Ryan Walsh Morrison Singh
Fraser"""
)
DE_FIRST = (
    ("Jürgen", "m"),
    ("Sabine", "f"),
    ("Thomas", "m"),
    ("Katrin", "f"),
    ("Matthias", "m"),
    ("Anja", "f"),
    ("Stefan", "m"),
    ("Julia", "f"),
    ("Andreas", "m"),
    ("Claudia", "f"),
    ("Florian", "m"),
    ("Birgit", "f"),
    ("Tobias", "m"),
    ("Miriam", "f"),
    ("Lukas", "m"),
    ("Ines", "f"),
    ("Uwe", "m"),
    ("Petra", "f"),
    ("Jörg", "m"),
    ("Sören", "m"),
)
DE_LAST = _words(
    """Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Koch Richter
Klein Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann Hartmann Lange Köhler"""
)
KO_FIRST = (
    ("지훈", "jihoon"),
    ("서연", "seoyeon"),
    ("민준", "minjun"),
    ("지은", "jieun"),
    ("현우", "hyunwoo"),
    ("수진", "sujin"),
    ("동현", "donghyun"),
    ("유진", "yujin"),
    ("성민", "sungmin"),
    ("혜진", "hyejin"),
    ("재원", "jaewon"),
    ("미경", "mikyung"),
    ("상훈", "sanghoon"),
    ("은지", "eunji"),
    ("정호", "jungho"),
    ("나연", "nayeon"),
    ("태호", "taeho"),
    ("소영", "soyoung"),
)
KO_LAST = (
    ("김", "kim"),
    ("이", "lee"),
    ("박", "park"),
    ("최", "choi"),
    ("정", "jung"),
    ("강", "kang"),
    ("조", "cho"),
    ("윤", "yoon"),
    ("장", "jang"),
    ("임", "lim"),
    ("한", "han"),
    ("오", "oh"),
    ("서", "seo"),
    ("신", "shin"),
)
JA_FIRST = (
    ("健太", "kenta"),
    ("美咲", "misaki"),
    ("大輔", "daisuke"),
    ("由美", "yumi"),
    ("翔", "sho"),
    ("直子", "naoko"),
    ("拓也", "takuya"),
    ("恵", "megumi"),
    ("誠", "makoto"),
    ("裕子", "yuko"),
)
JA_LAST = (
    ("佐藤", "sato"),
    ("鈴木", "suzuki"),
    ("高橋", "takahashi"),
    ("田中", "tanaka"),
    ("伊藤", "ito"),
    ("渡辺", "watanabe"),
    ("山本", "yamamoto"),
    ("中村", "nakamura"),
    ("小林", "kobayashi"),
    ("加藤", "kato"),
)

TITLES = {
    "en": {
        "finance_leader": (
            "Chief Financial Officer",
            "CFO",
            "VP Finance",
            "VP of Finance",
            "Controller",
            "Corporate Controller",
            "Director of Finance",
            "Head of Finance",
            "Assistant Controller",
            "Director of Accounting",
        ),
        "it_director": (
            "CIO",
            "Chief Information Officer",
            "IT Director",
            "Director of IT",
            "Head of IT",
            "VP of IT",
            "Director of Business Systems",
            "Head of Enterprise Applications",
            "IT Manager",
        ),
        "procurement_manager": (
            "Head of Procurement",
            "Procurement Manager",
            "Purchasing Manager",
            "Director of Procurement",
            "VP Procurement",
            "Chief Procurement Officer",
            "Strategic Sourcing Manager",
            "Senior Buyer",
        ),
    },
    "en-GB": {
        "finance_leader": (
            "Finance Director",
            "CFO",
            "Financial Controller",
            "Head of Finance",
            "Group Financial Controller",
        ),
        "it_director": ("IT Director", "Head of IT", "CIO", "Head of Business Applications"),
        "procurement_manager": (
            "Head of Procurement",
            "Procurement Manager",
            "Purchasing Manager",
            "Category Manager, Indirect Spend",
        ),
    },
    "de": {
        "finance_leader": (
            "CFO",
            "Head of Finance",
            "Kaufmännischer Leiter",
            "Finanzvorstand",
            "Leiter Rechnungswesen|Leiterin Rechnungswesen",
        ),
        "it_director": (
            "CIO",
            "Head of IT",
            "IT-Leiter|IT-Leiterin",
            "Leiter IT-Infrastruktur|Leiterin IT-Infrastruktur",
        ),
        "procurement_manager": (
            "Head of Procurement",
            "Leiter Einkauf|Leiterin Einkauf",
            "Strategischer Einkäufer|Strategische Einkäuferin",
        ),
    },
    "ko": {
        "finance_leader": (
            "CFO",
            "재무이사",
            "재무팀장",
            "회계팀장",
            "경영지원본부장",
            "재무담당 상무",
        ),
        "it_director": ("CIO", "IT팀장", "정보전략팀장", "정보보안팀장"),
        "procurement_manager": ("구매팀장", "구매본부장", "전략구매팀 부장"),
    },
    "ja": {
        "finance_leader": ("経理部長", "財務部長", "CFO", "経理課長"),
        "it_director": ("情報システム部長", "CIO", "IT推進室長"),
        "procurement_manager": ("購買部長", "調達部長", "購買課長"),
    },
}


def pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def ascii_slug(text: str) -> str:
    """Mailbox-safe spelling of a Latin name: Jürgen -> juergen, O'Connor -> oconnor."""
    for umlaut, plain in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss")):
        text = text.replace(umlaut, plain).replace(umlaut.upper(), plain.capitalize())
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in text.lower() if c.isalnum() or c == "-")


@dataclass(frozen=True)
class Person:
    first: str
    last: str
    first_ascii: str
    last_ascii: str
    gender: str = ""  # only German titles need it


def person(rng: random.Random, country: str) -> Person:
    """A name typical of the region, with an ASCII spelling for the mailbox."""
    if country in ("KR", "JP"):
        firsts, lasts = (KO_FIRST, KO_LAST) if country == "KR" else (JA_FIRST, JA_LAST)
        (first, fa), (last, la) = rng.choice(firsts), rng.choice(lasts)
        return Person(first, last, fa, la)
    if country == "DE":
        (first, gender), last = rng.choice(DE_FIRST), rng.choice(DE_LAST)
        return Person(first, last, ascii_slug(first), ascii_slug(last), gender)
    pools = {"GB": (UK_FIRST, UK_LAST), "AU": (AU_FIRST, AU_LAST)}
    firsts_en, lasts_en = pools.get(country, (EN_FIRST, EN_LAST))
    first, last = rng.choice(firsts_en), rng.choice(lasts_en)
    return Person(first, last, ascii_slug(first), ascii_slug(last))


def title_for(rng: random.Random, locale: str, persona: str, company: Company, gender: str) -> str:
    titles = TITLES.get(locale, TITLES["en"])[persona]
    if (company.size or 0) < SMALL_COMPANY:
        titles = tuple(t for t in titles if t not in BIG_COMPANY_TITLES) or titles
    title = rng.choice(titles)
    if "|" in title:  # German job titles are gendered
        masculine, feminine = title.split("|")
        return feminine if gender == "f" else masculine
    return title


def address(rng: random.Random, first: str, last: str, company: Company, used: set[str]) -> str:
    domain = company.domain + ".example"
    if rng.random() < 0.08:  # a few sign up with an address outside the company domain
        domain = rng.choice(FREE_DOMAINS)
    patterns = (f"{first}.{last}", f"{first[0]}{last}", f"{first}", f"{first}{last[0]}")
    for local in (*patterns, *(f"{first}.{last}{n}" for n in range(2, 50))):
        email = f"{local}@{domain}"
        if email not in used:
            used.add(email)
            return email
    raise RuntimeError(f"no free address for {first} {last} at {domain}")


def lifecycle(rng: random.Random, stage: str, source: str) -> str:
    if stage == "decision":
        return "lead"
    chance = 0.5 if source == "newsletter" else 0.1
    return "subscriber" if rng.random() < chance else "lead"


def rows(rng: random.Random) -> list[dict[str, str]]:
    used: set[str] = set()
    out: list[dict[str, str]] = []
    for region in REGIONS:
        for _ in range(region.count):
            company = rng.choice(region.companies)
            persona = pick(rng, region.personas)
            stage = pick(rng, STAGES)
            source = pick(rng, SOURCES)
            who = person(rng, region.country)
            out.append(
                {
                    "email": address(rng, who.first_ascii, who.last_ascii, company, used),
                    "first_name": who.first,
                    "last_name": who.last,
                    "company": company.name,
                    "title": title_for(rng, region.locale, persona, company, who.gender),
                    "industry": company.industry,
                    "company_size": "" if company.size is None else str(company.size),
                    "country": region.country,
                    "timezone": company.timezone,
                    "locale": region.locale,
                    "persona": persona,
                    "journey_stage": stage,
                    "lifecycle_stage": lifecycle(rng, stage, source),
                    "erp": company.erp,
                    "source": source,
                }
            )
    for row in rng.sample(out, BLANK_TIMEZONES):
        row["timezone"] = ""
    rng.shuffle(out)  # a CRM export is not sorted by region
    return out


def main() -> None:
    """Generate the CSV next to this script."""
    data = rows(random.Random(SEED))
    with OUT.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER, lineterminator="\n")
        writer.writeheader()
        writer.writerows(data)
    print(f"wrote {len(data)} leads to {OUT}")


if __name__ == "__main__":
    main()
