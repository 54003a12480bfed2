"""Versions, describe, limits and the daily request allocation (salesforce-api.md §2, §3, §7)."""

import pytest

from tests.emulator import EmulatorClient, EmulatorServer
from tests.emulator.schema import describe_field

NOT_FOUND = [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}]
# The describe field keys listed in salesforce-api.md §3.2.
FIELD_KEYS = {
    "aggregatable",
    "aiPredictionField",
    "autoNumber",
    "byteLength",
    "calculated",
    "calculatedFormula",
    "cascadeDelete",
    "caseSensitive",
    "compoundFieldName",
    "controllerName",
    "createable",
    "custom",
    "defaultValue",
    "defaultValueFormula",
    "defaultedOnCreate",
    "dependentPicklist",
    "deprecatedAndHidden",
    "digits",
    "displayLocationInDecimal",
    "encrypted",
    "externalId",
    "extraTypeInfo",
    "filterable",
    "filteredLookupInfo",
    "formulaTreatNullNumberAsZero",
    "groupable",
    "highScaleNumber",
    "htmlFormatted",
    "idLookup",
    "inlineHelpText",
    "label",
    "length",
    "mask",
    "maskType",
    "name",
    "nameField",
    "namePointing",
    "nillable",
    "permissionable",
    "picklistValues",
    "polymorphicForeignKey",
    "precision",
    "queryByDistance",
    "referenceTargetField",
    "referenceTo",
    "relationshipName",
    "relationshipOrder",
    "restrictedDelete",
    "restrictedPicklist",
    "scale",
    "searchPrefilterable",
    "soapType",
    "sortable",
    "type",
    "unique",
    "updateable",
    "writeRequiresMasterRead",
}


@pytest.fixture
def client(emulator: EmulatorServer) -> EmulatorClient:
    client = EmulatorClient(emulator.url)
    client.login()
    return client


def fields_of(client: EmulatorClient, obj: str) -> dict[str, dict[str, object]]:
    return {f["name"]: f for f in client.get(f"/sobjects/{obj}/describe/").json()["fields"]}


def test_versions_are_listed_without_authentication(emulator: EmulatorServer) -> None:
    reply = EmulatorClient(emulator.url).get("/services/data/")

    versions = reply.json()
    assert reply.status == 200 and "Sforce-Limit-Info" not in reply.headers
    assert [v["version"] for v in versions] == [f"{v}.0" for v in range(31, 67)]
    assert versions[0] == {"label": "Summer '14", "url": "/services/data/v31.0", "version": "31.0"}
    assert versions[-1]["label"] == "Spring '26"
    assert emulator.api_usage == 0  # not counted against the allocation


@pytest.mark.parametrize("version", ["30.0", "67.0", "99.0"])
def test_unknown_version_is_not_found(client: EmulatorClient, version: str) -> None:
    reply = client.get("/sobjects/", version=version)

    assert reply.status == 404
    assert reply.json() == NOT_FOUND


def test_unknown_path_is_not_found_in_salesforce_shape(client: EmulatorClient) -> None:
    assert client.get("/nothing/here").json() == NOT_FOUND


def test_describe_global(client: EmulatorClient) -> None:
    body = client.get("/sobjects/").json()

    assert body["encoding"] == "UTF-8" and body["maxBatchSize"] == 200
    objects = {o["name"]: o for o in body["sobjects"]}
    assert {
        "Account",
        "Contact",
        "Opportunity",
        "Invoice__c",
        "AccountHistory",
        "UserRole",
        "CaseStatus",
        "Attachment",
        "BenchRecord__c",
        "ActivityHistory",
    } == set(objects)
    account = objects["Account"]
    assert account["keyPrefix"] == "001" and account["custom"] is False
    assert account["queryable"] and account["retrieveable"] and account["replicateable"]
    assert account["urls"]["describe"] == "/services/data/v62.0/sobjects/Account/describe"
    assert objects["Invoice__c"]["custom"] is True
    assert objects["ActivityHistory"]["queryable"] is False
    assert objects["ActivityHistory"]["keyPrefix"] is None


def test_describe_fields_have_the_documented_keys(client: EmulatorClient) -> None:
    for obj in ("Account", "Invoice__c", "UserRole"):
        for field in fields_of(client, obj).values():
            assert set(field) == FIELD_KEYS


def test_describe_compound_address(client: EmulatorClient) -> None:
    fields = fields_of(client, "Account")

    address = fields["BillingAddress"]
    assert address["type"] == "address" and address["soapType"] == "urn:address"
    assert address["filterable"] is False and address["compoundFieldName"] is None
    components = {name for name, f in fields.items() if f["compoundFieldName"] == "BillingAddress"}
    assert components == {
        "BillingStreet",
        "BillingCity",
        "BillingState",
        "BillingPostalCode",
        "BillingCountry",
        "BillingLatitude",
        "BillingLongitude",
        "BillingGeocodeAccuracy",
    }


def test_describe_formula_base64_and_timestamps(client: EmulatorClient) -> None:
    invoice = fields_of(client, "Invoice__c")["Amount_With_Tax__c"]
    assert invoice["calculated"] is True and invoice["type"] == "currency"
    assert invoice["calculatedFormula"] and invoice["custom"] is True
    body = fields_of(client, "Attachment")["Body"]
    assert (body["type"], body["soapType"]) == ("base64", "xsd:base64Binary")
    assert {"SystemModstamp", "LastModifiedDate", "CreatedDate", "IsDeleted"} <= set(
        fields_of(client, "Opportunity")
    )
    history = fields_of(client, "AccountHistory")
    assert "CreatedDate" in history and not {"SystemModstamp", "LastModifiedDate"} & set(history)
    role = fields_of(client, "UserRole")
    assert not {"SystemModstamp", "LastModifiedDate", "CreatedDate"} & set(role)


def test_describe_covers_the_field_types(emulator: EmulatorServer, client: EmulatorClient) -> None:
    types = {
        f["type"]
        for obj in ("Account", "Contact", "Opportunity", "AccountHistory")
        for f in fields_of(client, obj).values()
    }

    assert {
        "id",
        "boolean",
        "int",
        "double",
        "currency",
        "percent",
        "date",
        "datetime",
        "picklist",
        "reference",
        "textarea",
        "string",
        "phone",
        "url",
        "email",
        "address",
        "anyType",
    } <= types
    description = fields_of(client, "Account")["Description"]
    assert description["filterable"] is False and description["length"] == 32000
    owner = fields_of(client, "Account")["OwnerId"]
    assert owner["referenceTo"] == ["User"] and owner["relationshipName"] == "Owner"
    name = emulator.org.spec("Account").field("Name")
    assert name is not None and fields_of(client, "Account")["Name"] == describe_field(name)


def test_describe_unknown_object_is_not_found(client: EmulatorClient) -> None:
    reply = client.get("/sobjects/Nope__c/describe/")

    assert reply.status == 404 and reply.json() == NOT_FOUND


def test_limits_and_limit_info_header(emulator: EmulatorServer, client: EmulatorClient) -> None:
    first = client.get("/limits/")
    client.create_job("SELECT Id FROM Account")
    second = client.get("/limits")

    assert first.headers["Sforce-Limit-Info"] == "api-usage=1/100000"
    assert second.headers["Sforce-Limit-Info"] == "api-usage=3/100000"
    body = second.json()
    assert body["DailyApiRequests"] == {"Max": 100000, "Remaining": 99997}
    assert body["DailyBulkV2QueryJobs"] == {"Max": 10000, "Remaining": 9999}
    assert body["DailyBulkV2QueryFileStorageMB"]["Max"] == 976562


def test_spent_allocation_answers_403_until_refilled(
    emulator: EmulatorServer, client: EmulatorClient
) -> None:
    emulator.knobs.daily_api_requests = 5
    emulator.set_api_usage(5)

    refused = client.get("/sobjects/")
    assert refused.status == 403
    assert refused.json() == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    assert emulator.api_usage == 5  # refused requests are not counted

    emulator.set_api_usage(0)
    reply = client.get("/sobjects/")
    assert reply.status == 200 and reply.headers["Sforce-Limit-Info"] == "api-usage=1/5"
