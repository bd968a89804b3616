//! Golden examples: `golden/<type>.json` (one valid record per type) and `golden/<type>.bin`
//! (its single-object encoding). Regenerate the .bin files after an intended schema change with
//! `GOVBUS_BLESS=1 cargo test -p bus-schemas --test golden`.
use std::{fs, path::PathBuf};

use bus_schemas::{split_header, Registry};
use chrono::NaiveDate;
use serde_json::Value as Json;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 28).unwrap()
}

/// Each type's golden JSON is valid, encodes to exactly the checked-in bytes, and decodes back to itself.
#[test]
fn golden_examples_round_trip() {
    let reg = Registry::standard();
    let bless = std::env::var_os("GOVBUS_BLESS").is_some();
    for t in reg.types() {
        let json_path = golden_dir().join(format!("{}.json", t.full_name));
        let json: Json =
            serde_json::from_str(&fs::read_to_string(&json_path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; every record type needs a golden example",
                    json_path.display()
                )
            }))
            .unwrap();
        let value = t.value_from_json(&json).unwrap();
        let report = t.validate_on(&value, today());
        assert!(
            report.is_valid(),
            "{}: {:?}",
            t.full_name,
            report.violations
        );
        let bytes = t.encode(&value).unwrap();
        let bin_path = golden_dir().join(format!("{}.bin", t.full_name));
        if bless {
            fs::write(&bin_path, &bytes).unwrap();
        }
        let expected = fs::read(&bin_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run GOVBUS_BLESS=1 cargo test -p bus-schemas --test golden",
                bin_path.display()
            )
        });
        assert_eq!(
            bytes, expected,
            "{}: encoding changed; if intended, re-bless",
            t.full_name
        );
        let (fp, _) = split_header(&bytes).unwrap();
        assert_eq!(fp, t.fingerprint);
        let (found, back) = reg.decode_to_json(&bytes).unwrap();
        assert_eq!(found.full_name, t.full_name);
        assert_eq!(back, json, "{}: decode(encode(x)) != x", t.full_name);
    }
}

/// A household registration with a wrong check digit fails naming the field; the correct one passes.
#[test]
fn household_check_digit() {
    let t = Registry::standard().get("HouseholdRegistration").unwrap();
    let mut json: Json = serde_json::from_str(
        &fs::read_to_string(golden_dir().join("gov.gz.police.HouseholdRegistration.json")).unwrap(),
    )
    .unwrap();
    assert!(t
        .validate_on(&t.value_from_json(&json).unwrap(), today())
        .is_valid());
    json["citizen_id_number"] = Json::from("440106198001010018");
    let report = t.validate_on(&t.value_from_json(&json).unwrap(), today());
    assert_eq!(report.violations.len(), 1);
    let v = &report.violations[0];
    assert_eq!(
        (v.field.as_str(), v.rule),
        ("citizen_id_number", "gb11643-check-digit")
    );
    assert!(
        !v.message.contains("440106"),
        "no personal data in messages"
    );
    assert_eq!(v.class, "18 digits");
}

/// Validation reports every violation with its field, including ones inside a Subject, and nothing else.
#[test]
fn every_violation_is_reported() {
    let t = Registry::standard().get("DeathCertificate").unwrap();
    let json = serde_json::json!({
        "certificate_number": "D-1",
        "division_code": "990101",
        "deceased": {"name": "某", "id_type": "111", "id_number": "440106198001010018"},
        "sex": "男",
        "ethnicity": "57",
        "death_date": "2099-01-01",
    });
    let report = t.validate_on(&t.value_from_json(&json).unwrap(), today());
    let got: Vec<_> = report
        .violations
        .iter()
        .map(|v| (v.field.as_str(), v.rule))
        .collect();
    assert_eq!(
        got,
        vec![
            ("division_code", "gbt2260-province"),
            ("deceased.id_number", "gb11643-check-digit"),
            ("sex", "code-table"),
            ("ethnicity", "code-table"),
            ("death_date", "date-not-future"),
        ]
    );
}

/// An ID number without its type, an unknown ID type and a missing key are violations;
/// a passport number is not checked as a citizen ID.
#[test]
fn subject_rules_and_keys() {
    let t = Registry::standard().get("FamilyPlanning").unwrap();
    let json = serde_json::json!({"subject": {"name": "某", "id_type": null, "id_number": "X1"}});
    let report = t.validate_on(&t.value_from_json(&json).unwrap(), today());
    let got: Vec<_> = report
        .violations
        .iter()
        .map(|v| (v.field.as_str(), v.rule))
        .collect();
    assert_eq!(
        got,
        vec![
            ("subject.id_type", "record-key"),
            ("subject.id_number", "subject-id-type-required")
        ]
    );
    let json = serde_json::json!({"subject": {"name": "Anna", "id_type": "414", "id_number": "E12345678"}});
    assert!(t
        .validate_on(&t.value_from_json(&json).unwrap(), today())
        .is_valid());
    let json =
        serde_json::json!({"subject": {"name": "Anna", "id_type": "pseudonym", "id_number": "E1"}});
    let report = t.validate_on(&t.value_from_json(&json).unwrap(), today());
    assert_eq!(report.violations[0].field, "subject.id_type");
}

/// JSON type errors name the field and what was expected.
#[test]
fn json_errors_name_the_field() {
    let t = Registry::standard().get("DeathCertificate").unwrap();
    let e = t
        .value_from_json(&serde_json::json!({"certificate_number": "D", "age": "eighty"}))
        .unwrap_err();
    assert_eq!(e.field, "age");
    assert!(e.problem.contains("whole number"), "{e}");
    let e = t
        .value_from_json(&serde_json::json!({"certificate_number": "D", "death_date": "2016/3/2"}))
        .unwrap_err();
    assert_eq!(e.field, "death_date");
    let e = t
        .value_from_json(&serde_json::json!({"age": 3}))
        .unwrap_err();
    assert_eq!(e.field, "certificate_number");
    let e = t
        .value_from_json(&serde_json::json!({"certificate_number": "D", "deceased": {"nam": "x"}}))
        .unwrap_err();
    assert_eq!(e.field, "deceased.nam");
}

/// Corrupt bodies are refused with a reason, never a panic.
#[test]
fn corrupt_bodies_are_refused() {
    let reg = Registry::standard();
    let t = reg.get("HouseholdRegistration").unwrap();
    let good = fs::read(golden_dir().join("gov.gz.police.HouseholdRegistration.bin")).unwrap();
    assert!(reg
        .decode(&good[..5])
        .unwrap_err()
        .to_string()
        .contains("shorter"));
    let mut bad = good.clone();
    bad[0] = 0;
    assert!(reg.decode(&bad).unwrap_err().to_string().contains("C3 01"));
    let mut bad = good.clone();
    bad[2] ^= 0xff;
    assert!(reg
        .decode(&bad)
        .unwrap_err()
        .to_string()
        .contains("no schema with fingerprint"));
    let mut extra = good.clone();
    extra.push(0);
    assert!(reg
        .decode(&extra)
        .unwrap_err()
        .to_string()
        .contains("left after"));
    for cut in 10..good.len() {
        assert!(
            t.decode_datum(&good[10..cut]).is_err(),
            "truncated at {cut} must fail"
        );
    }
}
