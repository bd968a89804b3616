//! Every saved input of the single-object decoding fuzz target (seeds and fixed crashes).

#[test]
fn decode_inputs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let n = bus_schemas::fuzzing::replay_saved(&root, "decode", bus_schemas::fuzzing::decode);
    assert!(n > 0, "no saved inputs under fuzz/seeds/decode");
}

/// What the decode fuzzer found: a datum may hold a date no `YYYY-MM-DD` can say. Validation
/// names it, the JSON view refuses it without panicking, `unrepresentable` names the field.
#[test]
fn a_date_out_of_range_is_named_not_panicked_on() {
    use apache_avro::types::Value;
    fn first_date(v: &mut Value) -> Option<&mut i32> {
        match v {
            Value::Date(d) => Some(d),
            Value::Union(_, inner) => first_date(inner),
            Value::Record(fields) => fields.iter_mut().find_map(|(_, x)| first_date(x)),
            _ => None,
        }
    }
    let registry = bus_schemas::Registry::standard();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let body = std::fs::read(root.join("golden/gov.gz.health.DeathCertificate.bin")).unwrap();
    let (rt, mut value) = registry.decode(&body).unwrap();
    for days in [i32::MAX, i32::MIN, 2_932_897] {
        *first_date(&mut value).expect("the record has a date") = days;
        let why = bus_schemas::validate::unrepresentable(&value).expect("named");
        assert!(why.contains("a date outside years 0000–9999"), "{why}");
        assert!(rt.value_to_json(&value).is_err());
        let report = rt.validate(&value);
        assert!(
            report.violations.iter().any(|v| v.rule == "date-range"),
            "{report:?}"
        );
    }
    // 9999-12-31 is the last date that can be written.
    *first_date(&mut value).unwrap() = 2_932_896;
    assert_eq!(bus_schemas::validate::unrepresentable(&value), None);
}
