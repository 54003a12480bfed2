"""The seeded org: which objects exist, their fields, and how their rows are generated.

Each object exists to exercise one thing a connector must get right:

| object          | rows  | why it is here                                                      |
|-----------------|-------|---------------------------------------------------------------------|
| Account         | large | compound ``BillingAddress`` (type address) and its components; a    |
|                 |       | long textarea; int, currency, double, date, picklist, phone, url    |
| Contact         | large | references, booleans, non-ASCII names, dates                        |
| Opportunity     | large | currency, percent, double, date, picklists                          |
| BenchRecord__c  | large | the benchmark object: 20 mixed-type fields                          |
| WideRecord__c   | large | the wide benchmark object: 30 fields, three of them long text;      |
|                 |       | only when ``OrgConfig.optional_objects`` names it                   |
| Invoice__c      | 250   | a custom object with a formula field (``calculated: true``)         |
| AccountHistory  | 500   | append-only: ``CreatedDate`` is its only timestamp                  |
| UserRole        | 12    | no timestamp at all (a snapshot resource). Real UserRole has        |
|                 |       | SystemModstamp; here it stands in for the cursor-less objects       |
| CaseStatus      | 6     | queryable through REST, rejected by Bulk (INVALIDENTITY, §3.4)      |
| Attachment      | 40    | a ``base64`` field (``Body``), which Bulk cannot serialise          |
| ActivityHistory | 0     | listed by describe-global but not queryable                         |

Every object is ``replicateable`` (getDeleted serves it) except CaseStatus and
ActivityHistory: Salesforce's status values and activity views are believed to support
neither getUpdated nor getDeleted. ``Org.set_replicateable`` overrides the flag.

"large" objects have ``OrgConfig.rows`` rows. Seeded SystemModstamps (CreatedDate for
AccountHistory) grow with the row index from ``TIMELINE_START`` to ``TIMELINE_END``.
"""

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass

from .generators import Blob, Constant, Gen
from .schema import FieldSpec, FieldType, Formula, ObjectSpec
from .seeding import OrgConfig, Seeder

T = FieldType
# Text that breaks naive CSV handling and type guessing: delimiters, quotes, newlines
# (LF and CRLF), non-ASCII, emoji, and strings that look like numbers or nulls.
TRICKY_TEXT = (
    'Zürich, "HQ"\nline 2', "Rocket 🚀 launch, phase 2", 'He said "hi", then left',
    "Ünïcödé — ½ ✓", "first line\r\nsecond line", "NA", "01234", "null", "  padded  ", "plain text",
    "a;b;c", "tab\tseparated", '"', "日本語のテキスト",
)  # fmt: skip
CITIES = ("Zürich", "San Francisco", "São Paulo", "Kraków", "Москва", "Austin", "Paris")
FIRST_NAMES = ("Zoë", "José", "Søren", "Ana", "李", "Émile", "Mary-Jane", "O'Brien")
INDUSTRIES = ("Agriculture", "Banking", "Biotechnology", "Energy", "Retail", "Technology")
STAGES = ("Prospecting", "Qualification", "Proposal/Price Quote", "Closed Won", "Closed Lost")
ACCESS = ("None", "Read", "Edit")
TAX_RATE = 0.20
# Long text is drawn from these: prose with the characters CSV quoting must get right.
LONG_TEXT_WORDS = (
    "the", "customer", "asked", "for", "a", "follow-up,", "call", 'said "yes"', "and", "then", "Zürich",
    "São Paulo", "renewal", "—", "½", "✓", "pricing;", "see\nattached", "notes\r\nbelow", "Q3", "2024-01-02",
    "1,234.50", "NA", "null", "🚀", "日本語", "escalated", "to", "legal", "(again)", "per", "contract",
)  # fmt: skip


@dataclass(frozen=True)
class SeededObject:
    spec: ObjectSpec
    rows: int


def _account(s: Seeder) -> ObjectSpec:
    def part(name: str, label: str, gen: Gen, kind: FieldType = T.STRING, length: int = 0) -> FieldSpec:
        """A component of the compound BillingAddress."""
        scale = 15 if kind is T.DOUBLE else 0
        precision = 18 if kind is T.DOUBLE else 0
        return FieldSpec(name, kind, label, gen, length=length, precision=precision, scale=scale,
                         compound_field_name="BillingAddress")  # fmt: skip

    street = s.pool(
        "BillingStreet", lambda rng: f"{rng.randrange(999)} Main St\nSuite {rng.randrange(99)}", 0.1
    )
    postal_code = s.pool("BillingPostalCode", lambda rng: f"{rng.randrange(100000):05d}", 0.1)
    latitude = s.pool("BillingLatitude", lambda rng: round(rng.uniform(-80, 80), 6), 0.2)
    longitude = s.pool("BillingLongitude", lambda rng: round(rng.uniform(-170, 170), 6), 0.2)
    address = (("street", "BillingStreet"), ("city", "BillingCity"), ("state", "BillingState"),
               ("postalCode", "BillingPostalCode"), ("country", "BillingCountry"),
               ("latitude", "BillingLatitude"), ("longitude", "BillingLongitude"),
               ("geocodeAccuracy", "BillingGeocodeAccuracy"))  # fmt: skip
    return ObjectSpec("Account", "Account", "Accounts", "001", (
        *s.audit("001"),
        s.named("Name", "Account Name", "Acme %07d", 255),
        s.picklist("Type", "Account Type", ("Prospect", "Customer - Direct", "Partner")),
        s.lookup("ParentId", "Parent Account ID", "Account", "001", "Parent", nulls=0.8),
        part("BillingStreet", "Billing Street", street, T.TEXTAREA, length=255),
        part("BillingCity", "Billing City", s.choice("BillingCity", CITIES, 0.1), length=40),
        part("BillingState", "Billing State", s.choice("BillingState", ("CA", "ZH"), 0.3), length=80),
        part("BillingPostalCode", "Billing Zip/Postal Code", postal_code, length=20),
        part("BillingCountry", "Billing Country", s.choice("BillingCountry", ("CH", "US")), length=80),
        part("BillingLatitude", "Billing Latitude", latitude, T.DOUBLE),
        part("BillingLongitude", "Billing Longitude", longitude, T.DOUBLE),
        part("BillingGeocodeAccuracy", "Billing Geocode Accuracy",
             s.choice("BillingGeocodeAccuracy", ("Address", "Zip", "City"), 0.3), T.PICKLIST, length=40),
        FieldSpec("BillingAddress", T.ADDRESS, "Billing Address", components=address),
        s.text("Phone", "Account Phone", ("+41 44 123 45 67", "(555) 010-2000"), 40, kind=T.PHONE),
        s.text("Website", "Website", ("https://example.com", "http://acme.test/a,b"), kind=T.URL),
        s.picklist("Industry", "Industry", INDUSTRIES),
        s.number("AnnualRevenue", "Annual Revenue", T.CURRENCY, 1e4, 5e8),
        s.number("NumberOfEmployees", "Employees", T.INT, 1, 250_000),
        s.picklist("Rating", "Account Rating", ("Hot", "Warm", "Cold")),
        s.text("Description", "Account Description", TRICKY_TEXT, 32000, kind=T.TEXTAREA),
        s.day("LastActivityDate", "Last Activity"),
        s.user_ref("OwnerId", "Owner ID"),
    ), timeline_field="SystemModstamp")  # fmt: skip


def _contact(s: Seeder) -> ObjectSpec:
    return ObjectSpec("Contact", "Contact", "Contacts", "003", (
        *s.audit("003"),
        s.lookup("AccountId", "Account ID", "Account", "001", "Account", nulls=0.05),
        s.text("FirstName", "First Name", FIRST_NAMES, 40),
        s.named("LastName", "Last Name", "Contact %07d"),
        s.text("Email", "Email", ("a@example.com", "zoë@exämple.ch"), 80, kind=T.EMAIL),
        s.text("Phone", "Business Phone", ("+1 555 0100", "+41 44 000 00 00"), 40, kind=T.PHONE),
        s.text("Title", "Title", ("CEO", "VP, Sales", 'The "Fixer"'), 128),
        s.day("Birthdate", "Birthdate", nulls=0.3),
        s.picklist("LeadSource", "Lead Source", ("Web", "Phone Inquiry", "Partner Referral")),
        s.flag("DoNotCall", "Do Not Call", 0.1),
        s.flag("HasOptedOutOfEmail", "Email Opt Out", 0.2),
        s.text("Description", "Contact Description", TRICKY_TEXT, 32000, kind=T.TEXTAREA),
        s.user_ref("OwnerId", "Owner ID"),
    ), timeline_field="SystemModstamp")  # fmt: skip


def _opportunity(s: Seeder) -> ObjectSpec:
    return ObjectSpec("Opportunity", "Opportunity", "Opportunities", "006", (
        *s.audit("006"),
        s.lookup("AccountId", "Account ID", "Account", "001", "Account", nulls=0.05),
        s.named("Name", "Name", "Deal %07d", 120),
        s.picklist("StageName", "Stage", STAGES, nillable=False),
        s.number("Amount", "Amount", T.CURRENCY, 100, 2e6, 2),
        s.number("Probability", "Probability (%)", T.PERCENT, 0, 100),
        s.day("CloseDate", "Close Date", nulls=0.0),
        s.picklist("Type", "Opportunity Type", ("New Customer", "Existing Customer - Upgrade")),
        s.flag("IsClosed", "Closed", 0.4),
        s.flag("IsWon", "Won", 0.2),
        s.picklist("ForecastCategoryName", "Forecast Category", ("Pipeline", "Best Case")),
        s.number("TotalOpportunityQuantity", "Quantity", T.DOUBLE, 1, 500, 2),
        s.text("NextStep", "Next Step", TRICKY_TEXT, 255),
        s.user_ref("OwnerId", "Owner ID"),
    ), timeline_field="SystemModstamp")  # fmt: skip


def _with_tax(inputs: tuple[object, ...], epoch: int) -> object:
    """Amount__c with tax; every formula epoch raises the tax rate by one point."""
    (amount,) = inputs
    if not isinstance(amount, float):
        return None
    return round(amount * (1 + TAX_RATE + epoch / 100), 2)


def _invoice(s: Seeder) -> ObjectSpec:
    with_tax = Formula("Amount__c * (1 + $Setup.Tax_Settings__c.Rate__c)", ("Amount__c",), _with_tax)
    return ObjectSpec("Invoice__c", "Invoice", "Invoices", "a01", (
        *s.audit("a01"),
        s.named("Name", "Invoice Number", "INV-%06d"),
        s.lookup("Account__c", "Account", "Account", "001", "Account__r"),
        s.number("Amount__c", "Amount", T.CURRENCY, 10, 50_000, 2),
        FieldSpec("Amount_With_Tax__c", T.CURRENCY, "With Tax", precision=18, scale=2, formula=with_tax),
        s.picklist("Status__c", "Status", ("Draft", "Sent", "Paid", "Void")),
        s.day("Due_Date__c", "Due Date"),
        s.flag("Paid__c", "Paid", 0.5),
        s.number("Quantity__c", "Quantity", T.DOUBLE, 1, 100),
        s.text("Notes__c", "Notes", TRICKY_TEXT, 255, kind=T.TEXTAREA),
        s.user_ref("OwnerId", "Owner ID"),
    ), timeline_field="SystemModstamp")  # fmt: skip


def _account_history(s: Seeder) -> ObjectSpec:
    values = ("Acme", "Hot", "Cold", "+1 555 0100", 'Zürich, "HQ"')
    return ObjectSpec("AccountHistory", "Account History", "Account History", "017", (
        s.record_id("017"),
        s.is_deleted(),
        s.lookup("AccountId", "Account ID", "Account", "001", "Account"),
        s.user_ref("CreatedById", "Created By ID", system=True),
        s.stamp("CreatedDate", "Created Date"),
        s.picklist("Field", "Changed Field", ("Name", "Rating", "Phone", "created"), nillable=False),
        s.picklist("DataType", "Data Type", ("Text", "DynamicEnum", "Phone")),
        s.text("OldValue", "Old Value", values, kind=T.ANYTYPE, nulls=0.3),
        s.text("NewValue", "New Value", values, kind=T.ANYTYPE, nulls=0.1),
    ), writable=False, timeline_field="CreatedDate")  # fmt: skip


def _user_role(s: Seeder) -> ObjectSpec:
    return ObjectSpec("UserRole", "Role", "Roles", "00E", (
        s.record_id("00E"),
        s.named("Name", "Name", "Role %03d"),
        s.named("DeveloperName", "Developer Name", "Role_%03d"),
        s.lookup("ParentRoleId", "Parent Role ID", "UserRole", "00E", None, nulls=0.3),
        s.text("RollupDescription", "Description", ("Sales", "Support, EMEA"), 80),
        s.picklist("OpportunityAccessForAccountOwner", "Opportunity Access", ACCESS, nillable=False),
        s.picklist("CaseAccessForAccountOwner", "Case Access", ACCESS),
        s.picklist("ContactAccessForAccountOwner", "Contact Access", ACCESS),
    ))  # fmt: skip


def _case_status(s: Seeder) -> ObjectSpec:
    labels = ("New", "Working", "Escalated", "On Hold", "Closed", "Resolved")
    return ObjectSpec("CaseStatus", "Case Status Value", "Case Status Values", "01J", (
        *s.audit("01J", deletable=False),
        s.fixed("MasterLabel", T.STRING, "Master Label", labels),
        s.fixed("ApiName", T.STRING, "Api Name", tuple(label.replace(" ", "") for label in labels)),
        s.fixed("SortOrder", T.INT, "Sort Order", (1, 2, 3, 4, 5, 6)),
        s.fixed("IsDefault", T.BOOLEAN, "Is Default", (True, False, False, False, False, False)),
        s.fixed("IsClosed", T.BOOLEAN, "Closed", (False, False, False, False, True, True)),
    ), bulk_supported=False, writable=False, replicateable=False,
       timeline_field="SystemModstamp")  # fmt: skip


def _attachment(s: Seeder) -> ObjectSpec:
    return ObjectSpec("Attachment", "Attachment", "Attachments", "00P", (
        *s.audit("00P"),
        s.lookup("ParentId", "Parent ID", "Account", "001", "Parent"),
        s.named("Name", "File Name", "file-%05d.txt", 255),
        s.flag("IsPrivate", "Private", 0.1),
        s.text("ContentType", "Content Type", ("text/plain", "application/pdf"), 120),
        FieldSpec("BodyLength", T.INT, "Body Length", Constant(80), digits=9),
        FieldSpec("Body", T.BASE64, "Body", Blob("attachment %08d\n", 4), nillable=False),
        s.text("Description", "Description", TRICKY_TEXT, 500, kind=T.TEXTAREA),
        s.user_ref("OwnerId", "Owner ID"),
    ), timeline_field="SystemModstamp")  # fmt: skip


def _activity_history(s: Seeder) -> ObjectSpec:
    return ObjectSpec("ActivityHistory", "Activity History", "Activity Histories", "", (
        s.record_id("00T"),
        s.text("Subject", "Subject", ("Call", "Email"), 255),
    ), queryable=False, retrieveable=False, replicateable=False, bulk_supported=False,
       writable=False)  # fmt: skip


def _bench_record(s: Seeder) -> ObjectSpec:
    """Twenty fields of mixed types: the object benchmarks export."""
    return ObjectSpec("BenchRecord__c", "Bench Record", "Bench Records", "a02", (
        *s.audit("a02"),
        s.named("Name", "Bench Record Name", "BR-%09d"),
        s.user_ref("OwnerId", "Owner ID"),
        s.lookup("Account__c", "Account", "Account", "001", "Account__r", nulls=0.1),
        s.number("Amount__c", "Amount", T.CURRENCY, 1, 1e6, 2),
        s.number("Quantity__c", "Quantity", T.DOUBLE, 0, 1e4, 3),
        s.number("Discount__c", "Discount", T.PERCENT, 0, 100, 1),
        s.flag("Active__c", "Active", 0.7),
        s.picklist("Region__c", "Region", ("EMEA", "AMER", "APAC", "LATAM")),
        s.day("Close_Date__c", "Close Date"),
        s.moment("Last_Seen__c", "Last Seen"),
        s.text("Email__c", "Email", ("ops@example.com", "zoë@exämple.ch"), 80, kind=T.EMAIL),
        s.text("Code__c", "Code", ("A-1", "NA", "01234", "null", "x,y"), 40),
        s.text("Notes__c", "Notes", TRICKY_TEXT, 255, kind=T.TEXTAREA),
    ), timeline_field="SystemModstamp")  # fmt: skip


def _long_text(rng: random.Random) -> str:
    """A paragraph of free text, 100 to 1,000 characters: what a real org's description,
    comment and note fields hold, with the quotes, commas, newlines and non-ASCII that CSV must carry."""
    words: list[str] = []
    size = rng.randrange(100, 1000)
    length = 0
    while length < size:
        word = rng.choice(LONG_TEXT_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)


def _wide_record(s: Seeder) -> ObjectSpec:
    """Thirty fields, three of them long text: the wide objects real orgs are full of (the second
    benchmark object; seeded only when asked for, OrgConfig.optional_objects)."""
    return ObjectSpec("WideRecord__c", "Wide Record", "Wide Records", "a03", (
        *s.audit("a03"),
        s.named("Name", "Wide Record Name", "WR-%09d"),
        s.user_ref("OwnerId", "Owner ID"),
        s.lookup("Account__c", "Account", "Account", "001", "Account__r", nulls=0.1),
        s.lookup("Contact__c", "Contact", "Contact", "003", "Contact__r", nulls=0.3),
        s.number("Amount__c", "Amount", T.CURRENCY, 1, 1e6, 2),
        s.number("Quantity__c", "Quantity", T.DOUBLE, 0, 1e4, 3),
        s.number("Discount__c", "Discount", T.PERCENT, 0, 100, 1),
        s.number("Score__c", "Score", T.INT, 0, 1000),
        s.flag("Active__c", "Active", 0.7),
        s.flag("Verified__c", "Verified", 0.3),
        s.picklist("Region__c", "Region", ("EMEA", "AMER", "APAC", "LATAM")),
        s.picklist("Stage__c", "Stage", STAGES),
        s.day("Close_Date__c", "Close Date"),
        s.day("Start_Date__c", "Start Date", nulls=0.3),
        s.moment("Last_Seen__c", "Last Seen"),
        s.text("Email__c", "Email", ("ops@example.com", "zoë@exämple.ch"), 80, kind=T.EMAIL),
        s.text("Phone__c", "Phone", ("+41 44 123 45 67", "(555) 010-2000"), 40, kind=T.PHONE),
        s.text("Website__c", "Website", ("https://example.com", "http://acme.test/a,b"), kind=T.URL),
        s.text("Code__c", "Code", ("A-1", "NA", "01234", "null", "x,y"), 40),
        s.text("Subject__c", "Subject", TRICKY_TEXT, 255),
        FieldSpec("Description__c", T.TEXTAREA, "Description", s.pool("Description__c", _long_text, 0.3),
                  length=32000),
        FieldSpec("Comments__c", T.TEXTAREA, "Comments", s.pool("Comments__c", _long_text, 0.6), length=32000),
        FieldSpec("Notes__c", T.TEXTAREA, "Notes", s.pool("Notes__c", _long_text, 0.8), length=32000),
    ), timeline_field="SystemModstamp")  # fmt: skip


BUILDERS: dict[str, Callable[[Seeder], ObjectSpec]] = {
    "Account": _account, "Contact": _contact, "Opportunity": _opportunity, "BenchRecord__c": _bench_record,
    "Invoice__c": _invoice, "AccountHistory": _account_history, "UserRole": _user_role,
    "CaseStatus": _case_status, "Attachment": _attachment, "ActivityHistory": _activity_history,
}  # fmt: skip


# Objects an org has only when its config asks for them (OrgConfig.optional_objects), so that the
# default org, and every snapshot and count taken of it, stays as it is.
OPTIONAL_BUILDERS: dict[str, Callable[[Seeder], ObjectSpec]] = {"WideRecord__c": _wide_record}


def build_catalog(config: OrgConfig) -> tuple[SeededObject, ...]:
    """Every object of the seeded org, with its row count, in describe-global order.
    Specs and generators are immutable (value pools are drawn on first use), so orgs of
    equal configs share them."""
    return _build_catalog(
        config.seed,
        config.rows,
        tuple(sorted(config.object_rows.items())),
        config.shared_modstamp_rows,
        tuple(config.optional_objects),
    )


@functools.lru_cache(maxsize=16)
def _build_catalog(
    seed: int,
    rows: int,
    object_rows: tuple[tuple[str, int], ...],
    shared_modstamp_rows: int,
    optional_objects: tuple[str, ...],
) -> tuple[SeededObject, ...]:
    config = OrgConfig(seed, rows, dict(object_rows), shared_modstamp_rows, optional_objects)
    unknown = set(optional_objects) - set(OPTIONAL_BUILDERS)
    if unknown:
        raise ValueError(f"no optional objects named {sorted(unknown)}; there are {sorted(OPTIONAL_BUILDERS)}")
    builders = BUILDERS | {name: OPTIONAL_BUILDERS[name] for name in optional_objects}
    seeders = [Seeder(config, name) for name in builders]
    return tuple(SeededObject(builders[s.name](s), s.rows) for s in seeders)
