//! The shape of the standard: 25 record types, every article item present, nullable fields,
//! record keys, Subject, docs.
use apache_avro::Schema;
use bus_schemas::Registry;
use serde_json::Value as Json;

fn field_docs(json: &Json) -> Vec<String> {
    json["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["doc"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The registry holds exactly the 25 record types of articles 9-25, each in its department's namespace.
#[test]
fn twenty_five_record_types_in_department_namespaces() {
    let reg = Registry::standard();
    assert_eq!(reg.types().len(), 25);
    for t in reg.types() {
        let parts: Vec<_> = t.full_name.split('.').collect();
        assert_eq!(parts.len(), 4, "{}", t.full_name);
        assert_eq!(&parts[..2], &["gov", "gz"], "{}", t.full_name);
        assert!(
            (9..=25).contains(&t.article.unwrap()),
            "{} names no article",
            t.full_name
        );
    }
    let fps: std::collections::HashSet<_> = reg.types().iter().map(|t| t.fingerprint).collect();
    assert_eq!(fps.len(), 25, "fingerprints must be distinct");
    assert_eq!(reg.shared_types()[0].0, "gov.gz.common.Subject");
}

/// Every item that an article lists appears in the doc of a field of its record type.
#[test]
fn nothing_the_articles_list_is_left_out() {
    let reg = Registry::standard();
    let text = include_str!("data/article-fields.txt");
    let mut covered = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (name, items) = line.split_once(": ").unwrap();
        let t = reg.get(name).unwrap();
        let docs = field_docs(&t.json);
        for item in items.split('、') {
            assert!(
                docs.iter().any(|d| d.contains(item)),
                "{name}: the article's item `{item}` is in no field doc"
            );
        }
        covered += 1;
    }
    assert_eq!(covered, 25);
}

/// Every field but the record key is `["null", T]` with default null; key fields are not nullable;
/// every field has a Chinese doc.
#[test]
fn optional_fields_and_keys() {
    for t in Registry::standard().types() {
        let Schema::Record(r) = t.schema else {
            panic!()
        };
        let top_keys: Vec<_> = t.key.iter().map(|k| k.split('.').next().unwrap()).collect();
        for f in &r.fields {
            let is_key = top_keys.contains(&f.name.as_str());
            match (&f.schema, is_key) {
                (Schema::Union(u), false) => {
                    assert!(
                        matches!(u.variants()[0], Schema::Null),
                        "{}.{}",
                        t.full_name,
                        f.name
                    );
                    assert_eq!(u.variants().len(), 2, "{}.{}", t.full_name, f.name);
                    assert_eq!(
                        f.default,
                        Some(Json::Null),
                        "{}.{} default",
                        t.full_name,
                        f.name
                    );
                }
                (Schema::Union(_), true) => panic!(
                    "{}.{} is a key and must not be nullable",
                    t.full_name, f.name
                ),
                (_, true) => {}
                (_, false) => panic!("{}.{} must be [\"null\", T]", t.full_name, f.name),
            }
            let doc = f.doc.as_deref().unwrap_or_default();
            assert!(
                doc.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
                "{}.{} doc",
                t.full_name,
                f.name
            );
        }
        assert!(!t.key.is_empty(), "{} has no record key", t.full_name);
        let doc = t.json["doc"].as_str().unwrap();
        for k in &t.key {
            assert!(
                doc.contains(k.as_str()),
                "{} doc does not name its key {k}",
                t.full_name
            );
        }
    }
}

/// Natural-person records carry Subject (name, ID type, ID number), every Subject field optional.
#[test]
fn natural_person_records_carry_subject() {
    let reg = Registry::standard();
    let natural = [
        "ResidencePermit",
        "MarriageRegistration",
        "AdoptionRegistration",
        "BirthMedicalCertificate",
        "DeathCertificate",
        "FamilyPlanning",
        "SocialInsurance",
        "ProfessionalTitle",
        "MinimumLivingAllowance",
        "StudentStatus",
        "AcademicDegree",
        "DisabilityCertificate",
        "ProvidentFundAccount",
        "QualificationCertificate",
        "PracticeCertificate",
    ];
    for name in natural {
        let t = reg.get(name).unwrap();
        let subjects = t.subject_fields();
        assert!(!subjects.is_empty(), "{name} has no Subject field");
        for s in subjects {
            for inner in ["name", "id_type", "id_number"] {
                assert!(
                    t.field_schema(&format!("{s}.{inner}")).is_some(),
                    "{name}.{s}.{inner}"
                );
            }
        }
    }
    // A record about several people has one Subject per role.
    let birth = reg.get("BirthMedicalCertificate").unwrap();
    assert_eq!(birth.subject_fields(), vec!["newborn", "mother", "father"]);
    // The police record of article 9 carries name and number itself (article 19 exempts police).
    assert!(reg
        .get("HouseholdRegistration")
        .unwrap()
        .subject_fields()
        .is_empty());
}

/// A short name finds its type; an unknown name says how to list the known ones.
#[test]
fn lookup_by_short_and_full_name() {
    let reg = Registry::standard();
    assert_eq!(
        reg.get("HouseholdRegistration").unwrap().full_name,
        "gov.gz.police.HouseholdRegistration"
    );
    assert!(reg.get("gov.gz.police.HouseholdRegistration").is_ok());
    let e = reg.get("Household").unwrap_err().to_string();
    assert!(e.contains("govbus schemas list"), "{e}");
}

/// Both tax registrations mark their taxpayer id as `taxpayer_id` (an identity the router
/// pseudonymises under pseudonym grants), checked for its shape: 15 to 20 digits and capital
/// letters, whether a credit code or an owner's ID number.
#[test]
fn taxpayer_ids_are_marked_and_checked() {
    let reg = Registry::standard();
    for name in ["LocalTaxRegistration", "NationalTaxRegistration"] {
        let rt = reg.get(name).unwrap();
        assert!(
            rt.elements
                .iter()
                .any(|(p, e)| p == "taxpayer_id" && *e == bus_schemas::Element::TaxpayerId),
            "{name}"
        );
        let rule = |id: &str| {
            let v = rt
                .value_from_json(&serde_json::json!({ "taxpayer_id": id }))
                .unwrap();
            rt.validate(&v)
                .violations
                .iter()
                .find(|x| x.field == "taxpayer_id")
                .map(|x| x.rule)
        };
        assert_eq!(rule("91440106MA59C0XK1X"), None, "a credit code");
        assert_eq!(rule("44010619900101123X"), None, "an ID number");
        assert_eq!(rule("440106900101123"), None, "15 characters");
        assert_eq!(rule("4401-0619900101"), Some("taxpayer-id-shape"));
        assert_eq!(rule("91440106ma59c0xk1x"), Some("taxpayer-id-shape"));
        assert_eq!(rule("1234"), Some("taxpayer-id-shape"));
    }
}
